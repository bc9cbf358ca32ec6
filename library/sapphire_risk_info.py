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
options:
  loss_window:
    description: Seconds of trades summed for the realized loss.
    type: float
    default: 3600
  max_hourly_loss:
    description: Realized loss in USD over O(loss_window) above which the check fails.
    type: float
    default: 1000
  max_daily_loss_percent:
    description: Loss since the start of the day, in percent of C(day_open_value), above which the check fails.
    type: float
    default: 5
  check_daily_loss:
    description: Read C(sapphire:portfolio) from Redis for the daily loss check.
    type: bool
    default: true
  key_prefix:
    description: Prefix of the platform's Redis keys.
    type: str
    default: sapphire
extends_documentation_fragment:
  - sapphire.redis
  - sapphire.postgres
  - sapphire.timeout
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
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

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_connections import (
    POSTGRES_ARGUMENT_SPEC,
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    describe_postgres_error,
    describe_redis_error,
    postgres_connect,
    postgres_endpoint,
    redis_client,
    require_psycopg,
    require_redis,
    validate_params,
)
from ansible.module_utils.sapphire_health import fail, finish, fmt_seconds, new_result, ok, skipped, warn

Q_BY_AGENT = """
SELECT agent_id, coalesce(sum(pnl), 0)::float8 FROM trades
WHERE timestamp > now() - make_interval(secs => %s) GROUP BY agent_id ORDER BY 2
"""
Q_BY_SYMBOL = """
SELECT symbol, coalesce(sum(pnl), 0)::float8 FROM trades
WHERE timestamp > now() - make_interval(secs => %s) GROUP BY symbol ORDER BY 2
"""


def losers(rows: list[tuple[str, float]], key: str) -> list[dict[str, Any]]:
    return [{key: name, "pnl": round(pnl, 2)} for name, pnl in sorted(rows, key=lambda row: row[1]) if pnl < 0]


def check_window(by_agent: list[tuple[str, float]], by_symbol: list[tuple[str, float]],
                 params: dict[str, Any]) -> tuple[dict[str, Any], float, list[dict[str, Any]], list[dict[str, Any]]]:
    total = round(sum(pnl for _, pnl in by_agent), 2)
    agents, symbols = losers(by_agent, "agent"), losers(by_symbol, "symbol")
    limit = params["max_hourly_loss"]
    window = fmt_seconds(params["loss_window"])
    observed = {"pnl": total, "window_seconds": params["loss_window"]}
    if -total > limit:
        worst_agents = ", ".join(f"{item['agent']} ({item['pnl']:+.2f})" for item in agents[:5])
        worst_symbols = ", ".join(f"{item['symbol']} ({item['pnl']:+.2f})" for item in symbols[:5])
        check = fail("risk_window_pnl", f"realized loss {-total:.2f} USD in the last {window} exceeds the limit of "
                     f"{limit:g} USD (TradingLoss); losing agents: {worst_agents or 'none'}; losing symbols: "
                     f"{worst_symbols or 'none'}; consider emergency-stop.yml", observed, -limit)
    else:
        check = ok("risk_window_pnl", f"realized P&L {total:+.2f} USD in the last {window} (loss limit {limit:g} USD)",
                   observed, -limit)
    return check, total, agents, symbols


def check_daily(portfolio: dict[str, str] | None, params: dict[str, Any],
                error: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    limit = params["max_daily_loss_percent"]
    if not params["check_daily_loss"]:
        return skipped("risk_daily_loss", "daily loss not checked", None, limit), {}
    if error:
        return fail("risk_daily_loss", f"cannot read the portfolio: {error}", None, limit), {}
    if not portfolio:
        return warn("risk_daily_loss", "sapphire:portfolio is missing in Redis; the daily loss cannot be checked "
                    "(is the coordinator writing it?)", None, limit), {}
    try:
        value, day_open = float(portfolio["value"]), float(portfolio["day_open_value"])
    except (KeyError, ValueError):
        return warn("risk_daily_loss", f"sapphire:portfolio lacks numeric value/day_open_value ({portfolio})",
                    portfolio, limit), dict(portfolio)
    if day_open <= 0:
        return warn("risk_daily_loss", f"sapphire:portfolio day_open_value is {day_open:g}", portfolio,
                    limit), dict(portfolio)
    percent = round(100.0 * (day_open - value) / day_open, 2)
    summary = {"value": value, "day_open_value": day_open, "daily_loss_percent": percent}
    if percent > limit:
        return fail("risk_daily_loss", f"portfolio lost {percent:.2f} % today ({day_open:.2f} -> {value:.2f} USD), "
                    f"above the {limit:g} % limit (Portfolio Loss); consider emergency-stop.yml", summary,
                    limit), summary
    return ok("risk_daily_loss", f"portfolio {value:.2f} USD, {-percent:+.2f} % today (limit -{limit:g} %)", summary,
              limit), summary


def collect(params: dict[str, Any], connect_pg: Callable[[dict[str, Any]], Any],
            connect_redis: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    result = new_result(postgres_endpoint(params))
    result.update(window_pnl=None, breaching_agents=[], breaching_symbols=[], portfolio={})
    try:
        conn = connect_pg(params)
        try:
            window = float(params["loss_window"])
            by_agent = [(str(a), float(p)) for a, p in conn.execute(Q_BY_AGENT, (window,)).fetchall()]
            by_symbol = [(str(s), float(p)) for s, p in conn.execute(Q_BY_SYMBOL, (window,)).fetchall()]
        finally:
            conn.close()
    except Exception as exc:  # unreachable database or missing table is a finding
        result["checks"].append(fail("risk_window_pnl", describe_postgres_error(exc, params), None,
                                     -params["max_hourly_loss"]))
    else:
        check, total, agents, symbols = check_window(by_agent, by_symbol, params)
        result["checks"].append(check)
        result.update(window_pnl=total, breaching_agents=agents, breaching_symbols=symbols)
    portfolio, error = None, None
    if params["check_daily_loss"]:
        try:
            portfolio = connect_redis(params).hgetall(f"{params['key_prefix']}:portfolio")
        except Exception as exc:  # unreachable Redis is a finding
            error = describe_redis_error(exc, params)
    check, summary = check_daily(portfolio, params, error)
    result["checks"].append(check)
    result["portfolio"] = summary
    return finish(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            POSTGRES_ARGUMENT_SPEC, REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            loss_window={"type": "float", "default": 3600.0},
            max_hourly_loss={"type": "float", "default": 1000.0},
            max_daily_loss_percent={"type": "float", "default": 5.0},
            check_daily_loss={"type": "bool", "default": True},
            key_prefix={"type": "str", "default": "sapphire"},
        ),
        supports_check_mode=True,
    )
    validate_params(module, ports=("postgres_port", "redis_port"),
                    positive=("connect_timeout", "loss_window", "max_hourly_loss"),
                    percents=("max_daily_loss_percent",))
    require_psycopg(module)
    if module.params["check_daily_loss"]:
        require_redis(module)
    module.exit_json(**collect(module.params, postgres_connect, redis_client))


if __name__ == "__main__":
    main()
