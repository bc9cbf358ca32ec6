#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_heartbeat_info
short_description: Check that every trading agent sends a fresh heartbeat, and report the halt flag
description:
  - Reads the Redis hashes C(sapphire:agent:<name>:heartbeat) (fields C(ts), C(status), C(tier),
    C(version)) of every agent in O(agents) and reports, per agent, whether the heartbeat is
    younger than O(max_age). Agents with C(replicas) 0 (scaled to zero, as in a warm DR region)
    are expected to be silent and are reported as C(skipped).
  - Reports stale and missing heartbeats (fail), agents whose heartbeat says C(stopped) (fail) or
    C(degraded) (warn), agents whose heartbeat tier differs from the configured tier (warn), and
    heartbeat keys of agents that are not in O(agents) (warn, O(check_unexpected)).
  - Reports the halt flag C(sapphire:halt) with its reason and actor; its status is O(halt_status).
  - An unreachable Redis is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.health
  - sapphire.key_prefix
  - sapphire.heartbeat
  - sapphire.redis
  - sapphire.timeout
requirements:
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Check the heartbeats of the ensemble
  sapphire_heartbeat_info:
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    agents: "{{ trading_agents }}"
    max_age: 60

- name: Check a warm DR region, where agents run at zero replicas and must stay silent
  sapphire_heartbeat_info:
    redis_port: 16380
    redis_password: "{{ redis_password }}"
    agents: "{{ trading_agents | map('combine', {'replicas': 0}) }}"
"""

RETURN = r"""
healthy:
  description: True when no check failed.
  returned: always
  type: bool
target:
  description: The Redis server that was read.
  returned: always
  type: str
checks:
  description: >-
    heartbeat:<agent> per agent, heartbeat_unexpected and trading_halt (each with name, status,
    observed, threshold, msg); redis_reachable first.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
stale:
  description: Agents whose heartbeat is older than O(max_age).
  returned: always
  type: list
  elements: str
missing:
  description: Agents without a heartbeat key.
  returned: always
  type: list
  elements: str
unexpected:
  description: Agents with a heartbeat key that are not in O(agents).
  returned: always
  type: list
  elements: str
tier_mismatch:
  description: Agents whose heartbeat reports another tier than configured.
  returned: always
  type: list
  elements: dict
  sample: [{agent: scalping, configured: accelerated, reported: standard}]
halt:
  description: Content of C(sapphire:halt) (reason, actor, ts) when trading is halted, else null.
  returned: always
  type: dict
"""

from ansible.module_utils.sapphire_connections import (
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    redis_client,
    run_health_module,
)
from ansible.module_utils.sapphire_trading import HEARTBEAT_SPEC, normalise_agents
from ansible.module_utils.sapphire_trading import heartbeat_collect as collect


def main() -> None:
    run_health_module(argument_spec(REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, HEARTBEAT_SPEC),
                      lambda params: collect(params, normalise_agents(params["agents"]), redis_client),
                      needs=("redis",), ports=("redis_port",), positive=("connect_timeout", "max_age"))


if __name__ == "__main__":
    main()
