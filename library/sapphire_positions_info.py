#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_positions_info
short_description: Reconcile the positions the agents keep in Redis with their trades in PostgreSQL
description:
  - Each agent keeps its open positions in Redis, hash C(<key_prefix>:positions:<agent>) - one field per symbol with
    the net quantity, C(_as_of) the time of the last trade counted and C(_since) that of the first. This module
    reads every such hash, then sums the agent's trades in PostgreSQL (C(trades), buys positive, sells negative) from
    C(_since) to C(_as_of), and compares symbol by symbol. Trades before C(_since) (written before the agent kept
    positions) are not counted.
  - One check per agent, C(positions:<agent>) - C(ok) when every symbol agrees within O(positions_tolerance),
    C(fail) naming each symbol that does not, with both values. After a failover or a restore a mismatch means the
    two stores lost different writes.
  - Redis is read before PostgreSQL, and a writer commits its trades before it updates Redis, so a writer that keeps
    trading during the check does not make it fail.
  - Read-only. An unreachable store is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.health
  - sapphire.key_prefix
  - sapphire.positions
  - sapphire.redis
  - sapphire.postgres
  - sapphire.timeout
requirements:
  - psycopg >= 3
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Reconcile the agents' positions after a failover
  sapphire_positions_info:
    redis_port: 16379
    redis_username: sapphire-monitor
    redis_password: "{{ redis_monitor_password }}"
    postgres_port: 15432
    postgres_user: sapphire_monitor
    postgres_password: "{{ postgres_monitor_password }}"
    trades_retention_days: 90
"""

RETURN = r"""
healthy:
  description: True when every agent's positions agree with its trades.
  returned: always
  type: bool
target:
  description: The Redis and the database that were compared.
  returned: always
  type: str
checks:
  description: One C(positions:<agent>) per agent that keeps positions (or one C(positions) when none or a store is
    unreachable).
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on, each naming the agent and the symbols.
  returned: always
  type: list
  elements: str
mismatches:
  description: Every symbol whose kept position differs from its trades' net quantity.
  returned: always
  type: list
  elements: dict
  sample: [{agent: momentum, symbol: BTC/USDT, redis: 1.5, trades: 1.25}]
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
from ansible.module_utils.sapphire_trading import POSITIONS_SPEC, positions_collect


def main() -> None:
    run_health_module(argument_spec(REDIS_ARGUMENT_SPEC, POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, POSITIONS_SPEC),
                      lambda params: positions_collect(params, redis_client, postgres_connect),
                      needs=("redis", "psycopg"), ports=("redis_port", "postgres_port"), positive=("connect_timeout",),
                      non_negative=("positions_tolerance", "trades_retention_days"))


if __name__ == "__main__":
    main()
