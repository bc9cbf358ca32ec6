#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_circuit_breaker_info
short_description: Report the platform's circuit breakers and which are open, since when
description:
  - Scans the Redis hashes C(sapphire:circuit:<name>) (fields C(state) closed|open|half_open and
    C(since), epoch seconds) and reports one check per breaker. An open breaker fails (the platform
    is cutting off a dependency such as the exchange), a half-open one warns (it is probing).
  - Breakers listed in O(expected) that have no key are reported as a warning, since the platform
    registers its breakers when it starts.
  - An unreachable Redis is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  expected:
    description: Breaker names the platform must have registered (for example exchange, market_data).
    type: list
    elements: str
    default: []
  half_open_status:
    description: Status reported for a half-open breaker.
    type: str
    choices: [ok, warn, fail]
    default: warn
extends_documentation_fragment:
  - sapphire.health
  - sapphire.key_prefix
  - sapphire.redis
  - sapphire.timeout
requirements:
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Check the circuit breakers of the platform
  sapphire_circuit_breaker_info:
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    expected: [exchange, market_data]
"""

RETURN = r"""
healthy:
  description: True when no breaker is open.
  returned: always
  type: bool
target:
  description: The Redis server that was read.
  returned: always
  type: str
checks:
  description: redis_reachable, then circuit:<name> per breaker found or expected.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
breakers:
  description: Every breaker found, with state, since and seconds in that state.
  returned: always
  type: list
  elements: dict
  sample: [{name: exchange, state: open, since: 1763683200.0, age_seconds: 42.0}]
open:
  description: Names of the open breakers.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.sapphire_connections import (
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    redis_client,
    run_health_module,
)
from ansible.module_utils.sapphire_trading import BREAKER_SPEC
from ansible.module_utils.sapphire_trading import breaker_collect as collect


def main() -> None:
    run_health_module(argument_spec(REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, BREAKER_SPEC),
                      lambda params: collect(params, redis_client),
                      needs=("redis",), ports=("redis_port",), positive=("connect_timeout",))


if __name__ == "__main__":
    main()
