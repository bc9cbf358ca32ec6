# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The trading-level health checks: heartbeats, circuit breakers, coordinator, market data, risk, positions.

Each check has its options (an argument-spec fragment such as `HEARTBEAT_SPEC`) and a
`<check>_collect(params, ...)` that takes the params of its sapphire_<check>_info module and
the callables that connect (injected, so tests pass fakes) and returns the module's result.
The five single modules are thin wrappers around these; sapphire_trading_info runs them
side by side. Option checks the argument spec cannot express raise ValueError with the
message the modules hand to fail_json.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.sapphire_connections import (
    describe_postgres_error,
    describe_redis_error,
    http_get,
    json_or_none,
    parse_prometheus_text,
    postgres_endpoint,
    redis_endpoint,
)
from ansible.module_utils.sapphire_health import fail, finish, fmt_seconds, new_result, ok, skipped, warn

STATUS_CHOICES = ["ok", "warn", "fail"]
BUILDERS = {"ok": ok, "warn": warn, "fail": fail}
KEY_PREFIX_SPEC: dict[str, dict[str, Any]] = {"key_prefix": {"type": "str", "default": "sapphire"}}


# ---------------------------------------------------------------- heartbeats and the halt flag (Redis)
HEARTBEAT_SPEC: dict[str, dict[str, Any]] = {
    "agents": {"type": "list", "elements": "dict", "required": True},
    "max_age": {"type": "float", "default": 60.0},
    "halt_status": {"type": "str", "choices": STATUS_CHOICES, "default": "warn"},
    "check_unexpected": {"type": "bool", "default": True},
    **KEY_PREFIX_SPEC,
}


def heartbeat_key(prefix: str, agent: str) -> str:
    return f"{prefix}:agent:{agent}:heartbeat"


def agent_from_key(prefix: str, key: str) -> str | None:
    head, tail = f"{prefix}:agent:", ":heartbeat"
    if key.startswith(head) and key.endswith(tail):
        return key[len(head):-len(tail)]
    return None


def check_agent(agent: dict[str, Any], beat: dict[str, str], now: float, max_age: float) -> dict[str, Any]:
    name = agent["name"]
    check_name = f"heartbeat:{name}"
    replicas = agent.get("replicas", 1)
    if replicas == 0:
        return skipped(check_name, f"agent {name} is scaled to zero; no heartbeat expected",
                       "scaled to zero", None)
    if not beat:
        return fail(check_name, f"agent {name} has no heartbeat (its heartbeat key is missing): is its Deployment "
                    "running and can it reach Redis?", "missing", max_age)
    try:
        age = max(0.0, now - float(beat.get("ts", "")))
    except ValueError:
        return fail(check_name, f"agent {name} heartbeat has no valid ts field ({beat.get('ts')!r})",
                    beat.get("ts"), max_age)
    observed = {"age_seconds": round(age, 1), "status": beat.get("status"), "tier": beat.get("tier"),
                "version": beat.get("version")}
    if age > max_age:
        return fail(check_name, f"agent {name} heartbeat is stale: last {fmt_seconds(age)} ago (> "
                    f"{fmt_seconds(max_age)}); the agent is hung or crashed", observed, max_age)
    status = beat.get("status", "running")
    if status == "stopped":
        return fail(check_name, f"agent {name} reports status stopped", observed, max_age)
    tier = agent.get("tier")
    if tier and beat.get("tier") and beat["tier"] != tier:
        return warn(check_name, f"agent {name} runs in tier {beat['tier']} but is configured for {tier}; "
                    "redeploy the agents role", observed, max_age)
    if status == "degraded":
        return warn(check_name, f"agent {name} reports status degraded", observed, max_age)
    return ok(check_name, f"agent {name} alive ({fmt_seconds(age)} ago, {status})", observed, max_age)


def check_halt(raw: str | None, status: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if raw is None:
        return ok("trading_halt", "trading is not halted", False, "absent"), None
    parsed = None
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    halt = parsed if isinstance(parsed, dict) else {"reason": raw}
    when = halt.get("ts")
    msg = (f"trading is HALTED (sapphire:halt set by {halt.get('actor', 'unknown')}"
           + (f" at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(float(when)))}"
              if isinstance(when, (int, float)) else "")
           + f": {halt.get('reason', 'no reason given')}); resume.yml clears it")
    return BUILDERS[status]("trading_halt", msg, halt, "absent"), halt


def heartbeat_evaluate(agents: list[dict[str, Any]], beats: dict[str, dict[str, str]], present: set[str],
                       halt_raw: str | None, now: float, params: dict[str, Any]) -> dict[str, Any]:
    """Checks and lists from the heartbeats read (beats: agent → hash; present: agents with a key)."""
    checks = [check_agent(agent, beats.get(agent["name"], {}), now, params["max_age"]) for agent in agents]
    configured = {agent["name"] for agent in agents}
    unexpected = sorted(present - configured)
    if not params["check_unexpected"]:
        checks.append(skipped("heartbeat_unexpected", "unexpected agents not checked", None, None))
    elif unexpected:
        checks.append(warn("heartbeat_unexpected", f"heartbeats from agents not in trading_agents: "
                           f"{', '.join(unexpected)} (left over from a removed agent, or another deployment "
                           "writing to this Redis)", unexpected, []))
    else:
        checks.append(ok("heartbeat_unexpected", "no heartbeats from unknown agents", [], []))
    halt_check, halt = check_halt(halt_raw, params["halt_status"])
    checks.append(halt_check)
    lists: dict[str, Any] = {"stale": [], "missing": [], "tier_mismatch": [], "unexpected": unexpected,
                             "halt": halt}
    for agent, item in zip(agents, checks, strict=False):
        if item["observed"] == "missing":
            lists["missing"].append(agent["name"])
        elif item["status"] == "fail" and "stale" in item["msg"]:
            lists["stale"].append(agent["name"])
        beat = beats.get(agent["name"], {})
        if agent.get("replicas", 1) and agent.get("tier") and beat.get("tier") and beat["tier"] != agent["tier"]:
            lists["tier_mismatch"].append({"agent": agent["name"], "configured": agent["tier"],
                                           "reported": beat["tier"]})
    lists["checks"] = checks
    return lists


def normalise_agents(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agents option as {name, tier, replicas}; ValueError names the bad item."""
    agents = []
    for index, item in enumerate(items):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"argument 'agents' item {index} has no 'name' (expected the shape of "
                             "trading_agents: name, strategy, tier, replicas)")
        try:
            replicas = int(item.get("replicas", 1))
        except (TypeError, ValueError):
            raise ValueError(f"argument 'agents' item {index} ({name}): replicas must be an integer, got "
                             f"{item.get('replicas')!r}") from None
        if replicas < 0:
            raise ValueError(f"argument 'agents' item {index} ({name}): replicas must be zero or more")
        agents.append({"name": name, "tier": item.get("tier"), "replicas": replicas})
    return agents


def heartbeat_collect(params: dict[str, Any], agents: list[dict[str, Any]],
                      connect: Callable[[dict[str, Any]], Any],
                      now: Callable[[], float] = time.time) -> dict[str, Any]:
    result = new_result(redis_endpoint(params))
    result.update(stale=[], missing=[], unexpected=[], tier_mismatch=[], halt=None)
    prefix = params["key_prefix"]
    try:
        client = connect(params)
        pipe = client.pipeline(transaction=False)
        for agent in agents:
            pipe.hgetall(heartbeat_key(prefix, agent["name"]))
        pipe.get(f"{prefix}:halt")
        replies = pipe.execute()
        present: set[str] = set()
        if params["check_unexpected"]:
            for key in client.scan_iter(match=heartbeat_key(prefix, "*"), count=1000):
                name = agent_from_key(prefix, key)
                if name:
                    present.add(name)
    except Exception as exc:  # unreachable Redis is a finding
        result["checks"].append(fail("redis_reachable", describe_redis_error(exc, params), False, True))
        return finish(result)
    beats = {agent["name"]: reply or {} for agent, reply in zip(agents, replies[:-1], strict=False)}
    present |= {name for name, beat in beats.items() if beat}
    outcome = heartbeat_evaluate(agents, beats, present, replies[-1], now(), params)
    result["checks"] = [ok("redis_reachable", "heartbeats read", True, True), *outcome.pop("checks")]
    result.update(outcome)
    return finish(result)


# ---------------------------------------------------------------- circuit breakers (Redis)
BREAKER_SPEC: dict[str, dict[str, Any]] = {
    "expected": {"type": "list", "elements": "str", "default": []},
    "half_open_status": {"type": "str", "choices": STATUS_CHOICES, "default": "warn"},
    **KEY_PREFIX_SPEC,
}


def describe_breaker(name: str, data: dict[str, str], now: float) -> dict[str, Any]:
    state = (data.get("state") or "unknown").lower()
    try:
        since = float(data["since"])
        age = round(max(0.0, now - since), 1)
    except (KeyError, ValueError):
        since, age = None, None
    return {"name": name, "state": state, "since": since, "age_seconds": age}


def check_breaker(breaker: dict[str, Any], half_open_status: str) -> dict[str, Any]:
    name, state, age = breaker["name"], breaker["state"], breaker["age_seconds"]
    duration = f" for {fmt_seconds(age)}" if age is not None else ""
    check_name = f"circuit:{name}"
    if state == "closed":
        return ok(check_name, f"circuit breaker {name} closed", breaker, "closed")
    if state == "open":
        return fail(check_name, f"circuit breaker {name} is OPEN{duration}: the platform has cut off {name}; "
                    "check that dependency (exchange API, market data feed) and its credentials", breaker, "closed")
    if state == "half_open":
        builder = BUILDERS[half_open_status]
        return builder(check_name, f"circuit breaker {name} is half-open{duration} (probing after failures)",
                       breaker, "closed")
    return warn(check_name, f"circuit breaker {name} has an unknown state {state!r}", breaker, "closed")


def breaker_evaluate(found: dict[str, dict[str, str]], expected: list[str], now: float,
                     half_open_status: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    breakers = [describe_breaker(name, data, now) for name, data in sorted(found.items())]
    checks = [check_breaker(item, half_open_status) for item in breakers]
    for name in expected:
        if name not in found:
            checks.append(warn(f"circuit:{name}", f"circuit breaker {name} is not registered in Redis; is the "
                               "coordinator running against this Redis?", "missing", "closed"))
    if not checks:
        checks.append(ok("circuit_breakers", "no circuit breakers registered", [], "closed"))
    return checks, breakers


def breaker_collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any],
                    now: Callable[[], float] = time.time) -> dict[str, Any]:
    result = new_result(redis_endpoint(params))
    result.update(breakers=[], open=[])
    head = f"{params['key_prefix']}:circuit:"
    try:
        client = connect(params)
        keys = sorted(client.scan_iter(match=head + "*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        found = {key[len(head):]: data or {} for key, data in zip(keys, pipe.execute(), strict=False)}
    except Exception as exc:  # unreachable Redis is a finding
        result["checks"].append(fail("redis_reachable", describe_redis_error(exc, params), False, True))
        return finish(result)
    checks, breakers = breaker_evaluate(found, params["expected"], now(), params["half_open_status"])
    result["checks"] = [ok("redis_reachable", f"{len(found)} circuit breaker(s) read", True, True), *checks]
    result["breakers"] = breakers
    result["open"] = [item["name"] for item in breakers if item["state"] == "open"]
    return finish(result)


# ---------------------------------------------------------------- coordinator /health and /metrics (HTTP)
COORDINATOR_SPEC: dict[str, dict[str, Any]] = {
    "required_metrics": {"type": "list", "elements": "str",
                         "default": ["portfolio_value", "trading_signals_total", "agent_activity_score",
                                     "circuit_breaker_state"]},
}


def validate_url(url: str, option: str = "url") -> None:
    """ValueError unless url is an http(s) URL; the message names the option."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"argument '{option}' must start with http:// or https://, got {url!r}")


def bad_components(health: dict[str, Any]) -> list[str]:
    found = []
    for name, detail in sorted((health.get("components") or {}).items()):
        status = detail.get("status") if isinstance(detail, dict) else detail
        if status not in ("ok", "up", True):
            extra = detail.get("error") or detail.get("detail") if isinstance(detail, dict) else None
            found.append(f"{name}={status}" + (f" ({extra})" if extra else ""))
    return found


def check_health(status: int | None, body: str, error: str | None, url: str) -> tuple[dict[str, Any], Any]:
    if error:
        return fail("coordinator_health", f"coordinator unreachable: {error}", None, 200), None
    health = json_or_none(body)
    state = health.get("status") if isinstance(health, dict) else None
    components = bad_components(health) if isinstance(health, dict) else []
    detail = f"; components: {', '.join(components)}" if components else ""
    observed = {"http_status": status, "status": state}
    if status != 200:
        return fail("coordinator_health", f"{url}/health answered HTTP {status} (status {state}){detail}; check the "
                    "coordinator's logs", observed, 200), health
    if state == "fail":
        return fail("coordinator_health", f"coordinator reports status fail{detail}", observed, "ok"), health
    if state == "degraded":
        return warn("coordinator_health", f"coordinator reports status degraded{detail}", observed, "ok"), health
    if state not in ("ok", "healthy"):
        return warn("coordinator_health", f"/health answered 200 without a known status ({state!r})", observed,
                    "ok"), health
    return ok("coordinator_health", "coordinator healthy", observed, "ok"), health


def check_metrics(status: int | None, body: str, error: str | None,
                  required: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    if error:
        return fail("coordinator_metrics", f"/metrics unreachable: {error}", None, required), {}
    if status != 200:
        return fail("coordinator_metrics", f"/metrics answered HTTP {status}", status, required), {}
    try:
        samples = parse_prometheus_text(body)
    except ValueError as exc:
        return fail("coordinator_metrics", f"/metrics is not valid Prometheus text: {exc}", None, required), {}
    counts = {name: len(values) for name, values in samples.items()}
    missing = [name for name in required if name not in counts]
    if missing:
        return warn("coordinator_metrics", f"/metrics lacks {', '.join(missing)}; dashboards and alert rules using "
                    "them are blind", sorted(counts), required), counts
    return ok("coordinator_metrics", f"/metrics parses ({len(counts)} metrics)", len(counts), required), counts


def coordinator_collect(params: dict[str, Any],
                        get: Callable[..., tuple[int | None, str, str | None]] = http_get) -> dict[str, Any]:
    base = params["url"].rstrip("/")
    result = new_result(f"coordinator {base}")
    health_check, health = check_health(*get(f"{base}/health", params, "application/json"), base)
    metrics_check, counts = check_metrics(*get(f"{base}/metrics", params, "text/plain"), params["required_metrics"])
    result["checks"] = [health_check, metrics_check]
    result.update(health=health if isinstance(health, dict) else None, metrics=counts)
    return finish(result)


# ---------------------------------------------------------------- market-data freshness (PostgreSQL)
MARKET_DATA_SPEC: dict[str, dict[str, Any]] = {
    "symbols": {"type": "list", "elements": "str", "default": []},
    "max_age": {"type": "float", "default": 300.0},
    "max_age_overrides": {"type": "dict", "default": {}},
    "lookback": {"type": "float", "default": 86400.0},
}

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


def validate_max_age_overrides(overrides: dict[str, Any] | None, option: str = "max_age_overrides") -> None:
    """ValueError naming the option and symbol unless every override is a positive number of seconds."""
    for symbol, value in (overrides or {}).items():
        try:
            if float(value) <= 0:
                raise ValueError(value)
        except (TypeError, ValueError):
            raise ValueError(f"argument '{option}' entry {symbol!r} must be a number of seconds greater than zero, "
                             f"got {value!r}") from None


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


def market_data_evaluate(rows: list[tuple[str, float | None, str | None]],
                         params: dict[str, Any]) -> list[dict[str, Any]]:
    overrides = params["max_age_overrides"] or {}
    checks = [check_symbol(symbol, age, newest, float(overrides.get(symbol, params["max_age"])))
              for symbol, age, newest in rows]
    if not checks:
        checks.append(fail("market_data", f"no trades at all in the last {fmt_seconds(params['lookback'])}; "
                           "the platform is not trading (halted, or no market data)", None, params["lookback"]))
    return checks


def market_data_collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
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
    result["checks"] = [ok("postgres_reachable", "trades read", True, True), *market_data_evaluate(rows, params)]
    result["symbols"] = {symbol: {"newest": newest, "age_seconds": None if age is None else round(age, 1)}
                         for symbol, age, newest in rows}
    return finish(result)


# ---------------------------------------------------------------- loss limits (PostgreSQL, Redis)
RISK_SPEC: dict[str, dict[str, Any]] = {
    "loss_window": {"type": "float", "default": 3600.0},
    "max_hourly_loss": {"type": "float", "default": 1000.0},
    "max_daily_loss_percent": {"type": "float", "default": 5.0},
    "check_daily_loss": {"type": "bool", "default": True},
    **KEY_PREFIX_SPEC,
}

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


def risk_collect(params: dict[str, Any], connect_pg: Callable[[dict[str, Any]], Any],
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


# ---------------------------------------------------------------- positions reconciliation (Redis against PostgreSQL)
# The positions an agent keeps in Redis (hash <prefix>:positions:<agent>: one field per symbol with the net quantity,
# _as_of the timestamp of the last trade counted, _since that of the first) must equal the net quantity of its trades
# in PostgreSQL from _since to _as_of (trades before _since, e.g. written before the agent kept positions, are not in
# them). A writer commits its trades first and updates Redis after, so reading Redis before
# PostgreSQL compares like with like while it keeps writing.
POSITIONS_SPEC: dict[str, dict[str, Any]] = {
    "positions_tolerance": {"type": "float", "default": 0.000001},
    "trades_retention_days": {"type": "int", "default": 0},
    **KEY_PREFIX_SPEC,
}
POSITIONS_AS_OF = "_as_of"
POSITIONS_SINCE = "_since"
Q_POSITIONS = """
SELECT symbol, sum(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END)::float8
FROM trades WHERE agent_id = %s AND timestamp >= %s::timestamptz AND timestamp <= %s::timestamptz GROUP BY symbol
"""


def positions_key(prefix: str, agent: str) -> str:
    return f"{prefix}:positions:{agent}"


def parse_positions(data: dict[str, str]) -> tuple[dict[str, float], list[str]]:
    """The symbols' net quantities of a positions hash, and the fields that are no number."""
    held, bad = {}, []
    for name, value in data.items():
        if name.startswith("_"):
            continue
        try:
            held[name] = float(value)
        except (TypeError, ValueError):
            bad.append(name)
    return held, bad


def parse_stamp(value: str | None) -> datetime.datetime | None:
    try:
        stamp = datetime.datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017


def check_positions(agent: str, window: str, held: dict[str, float], traded: dict[str, float],
                    tolerance: float) -> dict[str, Any]:
    """positions:<agent>: ok when each symbol's kept position equals its trades' sum; fail naming each that does not."""
    name = f"positions:{agent}"
    mismatches = []
    for symbol in sorted(set(held) | set(traded)):
        kept, summed = held.get(symbol, 0.0), traded.get(symbol, 0.0)
        if abs(kept - summed) > tolerance:
            mismatches.append({"symbol": symbol, "redis": round(kept, 9), "trades": round(summed, 9)})
    if mismatches:
        said = "; ".join(f"{item['symbol']} is {item['redis']:g} in Redis but its trades net {item['trades']:g}"
                         for item in mismatches)
        return fail(name, f"agent {agent}: positions disagree with its trades {window}: {said}", mismatches, [])
    return ok(name, f"agent {agent}: {len(held)} position(s) agree with its trades {window}", [], [])


def read_positions(client: Any, prefix: str) -> dict[str, dict[str, str]]:
    """Every agent's positions hash (agent -> fields), read in one pipeline; a connection error is raised."""
    keys = sorted(client.scan_iter(match=positions_key(prefix, "*"), count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return dict(zip((key[len(positions_key(prefix, "")):] for key in keys), pipe.execute(), strict=True))


def positions_collect(params: dict[str, Any], connect_redis: Callable[[dict[str, Any]], Any],
                      connect_pg: Callable[[dict[str, Any]], Any],
                      now: Callable[[], float] = time.time) -> dict[str, Any]:
    result = new_result(f"{redis_endpoint(params)} against {postgres_endpoint(params)}")
    result["mismatches"] = []
    prefix = params["key_prefix"]
    try:
        kept = read_positions(connect_redis(params), prefix)
    except Exception as exc:  # unreachable Redis is a finding
        result["checks"].append(fail("positions", describe_redis_error(exc, params), False, True))
        return finish(result)
    if not kept:
        result["checks"].append(skipped("positions", "no agent keeps positions in Redis yet"))
        return finish(result)
    horizon = None
    if params["trades_retention_days"] > 0:
        horizon = datetime.datetime.fromtimestamp(now(), datetime.timezone.utc) - datetime.timedelta(  # noqa: UP017
            days=params["trades_retention_days"])
    try:
        conn = connect_pg(params)
    except Exception as exc:  # unreachable database is a finding
        result["checks"].append(fail("positions", describe_postgres_error(exc, params), False, True))
        return finish(result)
    try:
        for agent, data in kept.items():
            held, bad = parse_positions(data)
            as_of, since = parse_stamp(data.get(POSITIONS_AS_OF)), parse_stamp(data.get(POSITIONS_SINCE))
            name = f"positions:{agent}"
            if bad or as_of is None or since is None:
                result["checks"].append(fail(name, f"agent {agent}: {positions_key(prefix, agent)} is not a positions "
                                             f"hash ({', '.join(bad) or POSITIONS_AS_OF + ' or ' + POSITIONS_SINCE} "
                                             "unreadable)", bad, []))
                continue
            if horizon is not None and since < horizon:
                days = params["trades_retention_days"]
                result["checks"].append(skipped(name, f"agent {agent}: positions kept since "
                                                f"{data.get(POSITIONS_SINCE) or 'an unknown time'} predate the trades' "
                                                f"retention ({days} days): not reconcilable"))
                continue
            traded = {str(symbol): float(net) for symbol, net in
                      conn.execute(Q_POSITIONS, (agent, since.isoformat(), as_of.isoformat())).fetchall()}
            window = f"from {data[POSITIONS_SINCE]} to {data[POSITIONS_AS_OF]}"
            check = check_positions(agent, window, held, traded, params["positions_tolerance"])
            result["checks"].append(check)
            result["mismatches"] += [{"agent": agent, **item} for item in check["observed"]]
    except Exception as exc:  # a missing table is a finding
        result["checks"].append(fail("positions", describe_postgres_error(exc, params), False, True))
    finally:
        conn.close()
    return finish(result)
