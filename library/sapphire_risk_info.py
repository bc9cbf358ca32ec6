#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_risk_info
short_description: Check realized trading losses against the platform's loss limits
description:
  - Sums the realized P&L (C(trades.pnl), USD) over the last O(loss_window) seconds and fails when
    the loss exceeds O(max_hourly_loss) (the seed's TradingLoss alert, more than 1000 USD in an
    hour). The agents and symbols that lost money in the window are reported, worst first.
  - Compares the portfolio value with the value at the start of the day (Redis hash
    C(sapphire:portfolio), fields C(value) and C(day_open_value)) and fails when the daily loss
    exceeds O(max_daily_loss_percent) (the seed's Portfolio Loss alert, more than 5 %).
  - Read-only; it never halts trading (emergency-stop.yml does).
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.health
  - sapphire.key_prefix
  - sapphire.risk
  - sapphire.redis
  - sapphire.postgres
  - sapphire.timeout
requirements:
  - psycopg >= 3
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Check the loss limits of seeds 001 and 004
  sapphire_risk_info:
    postgres_port: 15432
    postgres_password: "{{ postgres_password }}"
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    max_hourly_loss: 1000
    max_daily_loss_percent: 5
"""

RETURN = r"""
healthy:
  description: True when no loss limit is breached.
  returned: always
  type: bool
target:
  description: The database that was read.
  returned: always
  type: str
checks:
  description: risk_window_pnl and risk_daily_loss.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
window_pnl:
  description: Realized P&L in USD over the window (negative is a loss); null when unreadable.
  returned: always
  type: float
  sample: -1250.5
breaching_agents:
  description: Agents with a negative realized P&L in the window, worst first.
  returned: always
  type: list
  elements: dict
  sample: [{agent: scalping, pnl: -900.0}]
breaching_symbols:
  description: Symbols with a negative realized P&L in the window, worst first.
  returned: always
  type: list
  elements: dict
  sample: [{symbol: BTC/USDT, pnl: -1100.0}]
portfolio:
  description: The C(sapphire:portfolio) hash and the computed daily loss percent.
  returned: always
  type: dict
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
from ansible.module_utils.sapphire_trading import RISK_SPEC
from ansible.module_utils.sapphire_trading import risk_collect as collect


def main() -> None:
    run_health_module(argument_spec(POSTGRES_ARGUMENT_SPEC, REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, RISK_SPEC),
                      lambda params: collect(params, postgres_connect, redis_client),
                      needs=lambda params: ("psycopg", "redis") if params["check_daily_loss"] else ("psycopg",),
                      ports=("postgres_port", "redis_port"),
                      positive=("connect_timeout", "loss_window", "max_hourly_loss"),
                      percents=("max_daily_loss_percent",))


if __name__ == "__main__":
    main()
