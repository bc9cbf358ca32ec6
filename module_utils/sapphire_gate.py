# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The trading-aware gate of risky operations (a release, a planned failover, a resume, a cleanup that deletes).

An operation is refused while the agents' open positions are worth more than a threshold, or inside a configured
market-hours window, unless an override gives a reason. Open positions that cannot be valued (a store unreachable,
a symbol without a price) refuse too: the gate fails closed.

`exposure_collect` reads the positions (Redis, the hashes sapphire_positions_info reconciles) and the last traded
price of each symbol (PostgreSQL); `gate_decide` and the market hours (sapphire_market_hours) are pure, so the unit
tests drive them with any clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from ansible.module_utils.sapphire_connections import (
    describe_postgres_error,
    describe_redis_error,
    postgres_endpoint,
    redis_endpoint,
)
from ansible.module_utils.sapphire_market_hours import market_window, parse_market_hours
from ansible.module_utils.sapphire_trading import KEY_PREFIX_SPEC, parse_positions, positions_key, read_positions

GATE_SPEC: dict[str, dict[str, Any]] = {
    "operation": {"type": "str", "required": True},
    "max_open_notional": {"type": "float", "required": True},
    "market_hours": {"type": "list", "elements": "dict", "default": []},
    "override_reason": {"type": "str", "default": ""},
    **KEY_PREFIX_SPEC,
}
# The newest traded price of each symbol: one index probe per symbol (trades has (symbol, timestamp DESC)).
Q_PRICES = """
SELECT s.symbol, t.price::float8
FROM unnest(%s::text[]) AS s(symbol)
LEFT JOIN LATERAL (SELECT price FROM trades WHERE trades.symbol = s.symbol ORDER BY timestamp DESC LIMIT 1) t ON true
"""


def where(endpoint: str, text: str) -> str:
    """A store's error that names the store."""
    return text if endpoint in text else f"{endpoint}: {text}"


def exposure_collect(params: dict[str, Any], connect_redis: Callable[[dict[str, Any]], Any],
                     connect_pg: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """{measured, error, total, by_agent, unpriced}: the gross notional (USD) of the agents' open positions, each
    valued at its symbol's newest traded price."""
    result: dict[str, Any] = {"measured": False, "error": "", "total": None, "by_agent": {}, "unpriced": []}
    prefix = params["key_prefix"]
    if not params.get("redis_host") or not params.get("postgres_host"):
        result["error"] = ("no live primary Redis and PostgreSQL the controller can reach (host or external mode) "
                           "to read the positions from")
        return result
    try:
        kept = read_positions(connect_redis(params), prefix)
    except Exception as exc:  # an unreachable Redis leaves the positions unknown: the gate refuses
        result["error"] = where(redis_endpoint(params), describe_redis_error(exc, params))
        return result
    held = {}
    for agent, data in kept.items():
        quantities, bad = parse_positions(data)
        if bad:
            result["error"] = f"{positions_key(prefix, agent)} holds field(s) that are no number: {', '.join(bad)}"
            return result
        held[agent] = {symbol: qty for symbol, qty in quantities.items() if qty}
    symbols = sorted({symbol for positions in held.values() for symbol in positions})
    prices: dict[str, float | None] = {}
    if symbols:
        try:
            conn = connect_pg(params)
            try:
                prices = {str(symbol): price for symbol, price in conn.execute(Q_PRICES, (symbols,)).fetchall()}
            finally:
                conn.close()
        except Exception as exc:  # an unreachable database leaves the positions unvalued: the gate refuses
            result["error"] = where(postgres_endpoint(params), describe_postgres_error(exc, params))
            return result
    result["unpriced"] = [symbol for symbol in symbols if prices.get(symbol) is None]
    result["by_agent"] = {agent: round(sum(abs(qty) * (prices.get(symbol) or 0.0) for symbol, qty in open_.items()), 2)
                          for agent, open_ in held.items() if open_}
    result["total"] = round(sum(result["by_agent"].values()), 2)
    result["measured"] = not result["unpriced"]
    if result["unpriced"]:
        result["error"] = f"no traded price for {', '.join(result['unpriced'])} in the trades table to value them at"
    return result


def gate_decide(operation: str, exposure: dict[str, Any], window: str, max_open_notional: float,
                override_reason: str) -> dict[str, Any]:
    """{allowed, overridden, refusals, msg}: why `operation` may not run now, and whether an override lets it."""
    refusals = []
    if not exposure["measured"]:
        refusals.append(f"the open positions could not be valued ({exposure['error']})")
    elif exposure["total"] > max_open_notional:
        largest = sorted(exposure["by_agent"].items(), key=lambda item: (-item[1], item[0]))[:3]
        refusals.append(f"open positions are worth {exposure['total']:,.2f} USD, above the "
                        f"{max_open_notional:,.2f} USD threshold (largest: "
                        + ", ".join(f"{agent} {value:,.2f}" for agent, value in largest) + ")")
    if window:
        refusals.append(f"it is inside the market hours {window}")
    reason = (override_reason or "").strip()
    overridden = bool(refusals) and bool(reason)
    if not refusals:
        msg = (f"{operation}: allowed; open positions {exposure['total']:,.2f} USD (threshold "
               f"{max_open_notional:,.2f}), outside market hours")
    elif overridden:
        msg = f"{operation}: allowed by override ({reason}) although " + "; ".join(refusals)
    else:
        msg = f"{operation}: refused because " + "; ".join(refusals)
    return {"allowed": not refusals or overridden, "overridden": overridden, "refusals": refusals,
            "reason": reason if overridden else "", "msg": msg}


def gate_collect(params: dict[str, Any], connect_redis: Callable[[dict[str, Any]], Any],
                 connect_pg: Callable[[dict[str, Any]], Any],
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.timezone.utc),  # noqa: UP017
                 ) -> dict[str, Any]:
    """The module's result: the exposure, the market window and the decision."""
    windows = parse_market_hours(params["market_hours"])
    if params["max_open_notional"] < 0:
        raise ValueError(f"argument 'max_open_notional' must be zero or more, got {params['max_open_notional']}")
    exposure = exposure_collect(params, connect_redis, connect_pg)
    window = market_window(windows, now())
    decision = gate_decide(params["operation"], exposure, window, params["max_open_notional"],
                           params["override_reason"])
    return {"changed": False, "operation": params["operation"], "exposure": exposure, "market_window": window,
            **decision}
