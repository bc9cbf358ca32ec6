#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_trading_gate
short_description: Decide whether a risky operation may run given the open positions and the market hours
description:
  - Values the agents' open positions (Redis, hashes C(<key_prefix>:positions:<agent>), net quantity per symbol) at
    each symbol's newest traded price (PostgreSQL, C(trades)) and sums their absolute values, the gross notional in
    USD.
  - Refuses O(operation) when that notional is above O(max_open_notional), when the time is inside one of
    O(market_hours), or when the positions cannot be valued (a store unreachable, a symbol never traded) - unless
    O(override_reason) gives a reason, which the result then carries for the caller to record.
  - Reads only and never fails on a refusal; the caller asserts RV(allowed). A bad O(market_hours) fails the module
    with a message naming the field.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.key_prefix
  - sapphire.redis
  - sapphire.postgres
  - sapphire.timeout
options:
  operation:
    description: What is gated, as the messages name it (for example C(release 2.4.1 of deploy.yml)).
    type: str
    required: true
  max_open_notional:
    description: Largest gross notional (USD) of open positions the operation runs with, without an override.
    type: float
    required: true
  market_hours:
    description:
      - Windows during which the operation is refused, each C({days, start, end, timezone}). C(days) is a list of
        C(mon) ... C(sun) (default every day), C(start) and C(end) are C(HH:MM) in C(timezone) (an IANA name,
        default C(UTC)); an end before the start runs overnight into the next day. Empty means never.
    type: list
    elements: dict
    default: []
  override_reason:
    description: Why the operation must run anyway. Non-empty lets a refused operation through; the reason is returned.
    type: str
    default: ""
requirements:
  - psycopg >= 3
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Refuse a release while positions are open or the market is open
  sapphire_trading_gate:
    operation: release 2.4.1
    redis_port: 16379
    redis_username: sapphire-monitor
    redis_password: "{{ redis_monitor_password }}"
    postgres_port: 15432
    postgres_user: sapphire_monitor
    postgres_password: "{{ postgres_monitor_password }}"
    max_open_notional: 1000000
    market_hours:
      - {days: [mon, tue, wed, thu, fri], start: "09:30", end: "16:00", timezone: America/New_York}
    override_reason: "{{ gate_override_reason }}"
  register: gate
"""

RETURN = r"""
allowed:
  description: True when the operation may run (nothing refuses it, or an override gave a reason).
  returned: always
  type: bool
overridden:
  description: True when a refusal was overridden.
  returned: always
  type: bool
reason:
  description: The override's reason when it was used, else empty.
  returned: always
  type: str
refusals:
  description: Each reason the operation is refused without an override.
  returned: always
  type: list
  elements: str
msg:
  description: One sentence with the decision and why.
  returned: always
  type: str
market_window:
  description: The window of O(market_hours) the time falls in, or empty.
  returned: always
  type: str
exposure:
  description: C(measured), C(error), C(total) (USD), C(by_agent) (USD per agent), C(unpriced) (symbols).
  returned: always
  type: dict
  sample: {measured: true, error: "", total: 125000.5, by_agent: {momentum: 100000.0, scalping: 25000.5}, unpriced: []}
"""

from ansible.module_utils.sapphire_connections import (
    POSTGRES_ARGUMENT_SPEC,
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    postgres_connect,
    redis_client,
    run_health_module,
)
from ansible.module_utils.sapphire_gate import GATE_SPEC, gate_collect


def main() -> None:
    run_health_module(argument_spec(REDIS_ARGUMENT_SPEC, POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, GATE_SPEC),
                      lambda params: gate_collect(params, redis_client, postgres_connect),
                      needs=("redis", "psycopg"), ports=("redis_port", "postgres_port"), positive=("connect_timeout",))


if __name__ == "__main__":
    main()
