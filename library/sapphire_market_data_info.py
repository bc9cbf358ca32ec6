#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_market_data_info
short_description: Check that market data is fresh - the newest trade per symbol is within its threshold
description:
  - Reads the newest row of the C(trades) table per symbol and reports one check per symbol, ok
    when it is younger than O(max_age) (or the symbol's entry in O(max_age_overrides)), fail when
    older or absent. Ages are computed by the database clock, so a skewed controller clock does
    not matter.
  - With O(symbols) empty, the symbols are those traded within O(lookback); no trade at all in
    that window fails.
  - An unreachable PostgreSQL or a missing C(trades) table is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  symbols:
    description: Symbols that must have fresh trades; empty means every symbol seen within O(lookback).
    type: list
    elements: str
    default: []
  max_age:
    description: Seconds after which a symbol's newest trade is stale.
    type: float
    default: 300
  max_age_overrides:
    description: Per-symbol thresholds in seconds (for example a thinly traded pair).
    type: dict
    default: {}
  lookback:
    description: Seconds of history searched for symbols when O(symbols) is empty.
    type: float
    default: 86400
extends_documentation_fragment:
  - sapphire.postgres
  - sapphire.timeout
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - psycopg >= 3
"""

EXAMPLES = r"""
- name: Check that every traded symbol had a trade in the last five minutes
  sapphire_market_data_info:
    postgres_port: 15432
    postgres_password: "{{ postgres_password }}"
    max_age: 300
    max_age_overrides:
      DOGE/USDT: 900
"""

RETURN = r"""
healthy:
  description: True when every symbol is fresh.
  returned: always
  type: bool
target:
  description: The server that was read.
  returned: always
  type: str
checks:
  description: postgres_reachable, then market_data:<symbol> per symbol.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
symbols:
  description: Per symbol the newest trade time and its age in seconds (null when none).
  returned: always
  type: dict
  sample: {BTC/USDT: {newest: "2026-11-21 10:00:00+00", age_seconds: 3.2}}
"""

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_connections import (
    POSTGRES_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    describe_postgres_error,
    postgres_connect,
    postgres_endpoint,
    require_psycopg,
    validate_params,
)
from ansible.module_utils.sapphire_health import fail, finish, fmt_seconds, new_result, ok

Q_DISCOVER = """
SELECT symbol, extract(epoch FROM now() - max(timestamp))::float8, max(timestamp)::text
FROM trades WHERE timestamp > now() - make_interval(secs => %s) GROUP BY symbol ORDER BY symbol
"""
Q_SYMBOLS = """
SELECT s.symbol, extract(epoch FROM now() - t.newest)::float8, t.newest::text
FROM unnest(%s::text[]) AS s(symbol)
LEFT JOIN LATERAL (SELECT max(timestamp) AS newest FROM trades WHERE trades.symbol = s.symbol) t ON true
ORDER BY s.symbol
"""


def check_symbol(symbol: str, age: float | None, newest: str | None, limit: float) -> dict[str, Any]:
    name = f"market_data:{symbol}"
    observed = {"newest": newest, "age_seconds": None if age is None else round(age, 1)}
    if age is None:
        return fail(name, f"no trade recorded for {symbol}; is the market data feed (and the agents trading it) "
                    "running?", observed, limit)
    if age > limit:
        return fail(name, f"market data for {symbol} is stale: newest trade {fmt_seconds(age)} ago (> "
                    f"{fmt_seconds(limit)}); check the feed and the market_data circuit breaker", observed, limit)
    return ok(name, f"{symbol} newest trade {fmt_seconds(age)} ago", observed, limit)


def evaluate(rows: list[tuple[str, float | None, str | None]], params: dict[str, Any]) -> list[dict[str, Any]]:
    overrides = params["max_age_overrides"] or {}
    checks = [check_symbol(symbol, age, newest, float(overrides.get(symbol, params["max_age"])))
              for symbol, age, newest in rows]
    if not checks:
        checks.append(fail("market_data", f"no trades at all in the last {fmt_seconds(params['lookback'])}; "
                           "the platform is not trading (halted, or no market data)", None, params["lookback"]))
    return checks


def collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    result = new_result(postgres_endpoint(params))
    result["symbols"] = {}
    try:
        conn = connect(params)
    except Exception as exc:  # unreachable database is a finding
        result["checks"].append(fail("postgres_reachable", describe_postgres_error(exc, params), False, True))
        return finish(result)
    try:
        if params["symbols"]:
            rows = conn.execute(Q_SYMBOLS, (params["symbols"],)).fetchall()
        else:
            rows = conn.execute(Q_DISCOVER, (float(params["lookback"]),)).fetchall()
    except Exception as exc:  # e.g. the trades table is missing
        result["checks"].append(fail("market_data", f"{postgres_endpoint(params)}: cannot read trades: "
                                     f"{' '.join(str(exc).split())}", None, None))
        return finish(result)
    finally:
        conn.close()
    result["checks"] = [ok("postgres_reachable", "trades read", True, True), *evaluate(rows, params)]
    result["symbols"] = {symbol: {"newest": newest, "age_seconds": None if age is None else round(age, 1)}
                         for symbol, age, newest in rows}
    return finish(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            symbols={"type": "list", "elements": "str", "default": []},
            max_age={"type": "float", "default": 300.0},
            max_age_overrides={"type": "dict", "default": {}},
            lookback={"type": "float", "default": 86400.0},
        ),
        supports_check_mode=True,
    )
    validate_params(module, ports=("postgres_port",), positive=("connect_timeout", "max_age", "lookback"))
    for symbol, value in (module.params["max_age_overrides"] or {}).items():
        try:
            if float(value) <= 0:
                raise ValueError(value)
        except (TypeError, ValueError):
            module.fail_json(msg=f"argument 'max_age_overrides' entry {symbol!r} must be a number of seconds greater "
                             f"than zero, got {value!r}")
    require_psycopg(module)
    module.exit_json(**collect(module.params, postgres_connect))


if __name__ == "__main__":
    main()
