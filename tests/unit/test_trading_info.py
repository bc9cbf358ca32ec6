"""Heartbeats, circuit breakers, market data and risk: the trading-level checks, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible.module_utils.sapphire_trading import (
    Q_POSITIONS,
    breaker_evaluate,
    check_agent,
    check_breaker,
    check_daily,
    check_halt,
    check_window,
    describe_breaker,
    heartbeat_evaluate,
    market_data_evaluate,
    positions_collect,
)

NOW = 1_800_000_000.0
HB_PARAMS = {"max_age": 60.0, "halt_status": "warn", "check_unexpected": True, "key_prefix": "sapphire"}
AGENTS = [{"name": "momentum", "tier": "standard", "replicas": 2}, {"name": "scalping", "tier": "accelerated",
                                                                     "replicas": 1},
          {"name": "volatility", "tier": "standard", "replicas": 0}]


def beat(age: float, **extra: str) -> dict[str, str]:
    return {"ts": str(NOW - age), "status": "running", "tier": "standard", "version": "2026.11.0", **extra}


@pytest.mark.parametrize(("agent", "data", "status", "phrase"), [
    (AGENTS[0], beat(3), "ok", "alive"),
    (AGENTS[0], beat(61), "fail", "stale"),
    (AGENTS[0], {}, "fail", "no heartbeat"),
    (AGENTS[0], beat(3, status="stopped"), "fail", "stopped"),
    (AGENTS[0], beat(3, status="degraded"), "warn", "degraded"),
    (AGENTS[1], beat(3), "warn", "configured for accelerated"),
    (AGENTS[0], {"ts": "yesterday"}, "fail", "no valid ts"),
    (AGENTS[2], {}, "skipped", "scaled to zero"),
    (AGENTS[2], beat(3), "skipped", "scaled to zero"),
])
def test_heartbeat_per_agent(agent: dict[str, Any], data: dict[str, str], status: str, phrase: str) -> None:
    check = check_agent(agent, data, NOW, 60.0)
    assert check["status"] == status
    assert phrase in check["msg"]
    assert check["name"] == f"heartbeat:{agent['name']}"


def test_heartbeat_lists_stale_missing_unexpected_and_tier_mismatch() -> None:
    beats = {"momentum": beat(300), "scalping": beat(1, tier="standard")}
    outcome = heartbeat_evaluate(AGENTS, beats, {"momentum", "scalping", "ghost"}, None, NOW, HB_PARAMS)
    assert outcome["stale"] == ["momentum"]
    assert outcome["missing"] == []
    assert outcome["unexpected"] == ["ghost"]
    assert outcome["tier_mismatch"] == [{"agent": "scalping", "configured": "accelerated", "reported": "standard"}]
    names = {c["name"]: c["status"] for c in outcome["checks"]}
    assert names["heartbeat_unexpected"] == "warn"
    assert names["trading_halt"] == "ok"
    missing = heartbeat_evaluate(AGENTS, {}, set(), None, NOW, HB_PARAMS)
    assert missing["missing"] == ["momentum", "scalping"]


@pytest.mark.parametrize(("raw", "status_param", "status", "phrase"), [
    (None, "warn", "ok", "not halted"),
    (json.dumps({"reason": "loss limit", "actor": "oncall", "ts": NOW}), "warn", "warn", "set by oncall"),
    (json.dumps({"reason": "drill", "actor": "ci"}), "fail", "fail", "drill"),
    ("plain text", "warn", "warn", "plain text"),
])
def test_halt_flag(raw: str | None, status_param: str, status: str, phrase: str) -> None:
    check, halt = check_halt(raw, status_param)
    assert check["status"] == status
    assert phrase in check["msg"]
    assert (halt is None) == (raw is None)


@pytest.mark.parametrize(("data", "status", "phrase"), [
    ({"state": "closed", "since": str(NOW - 10)}, "ok", "closed"),
    ({"state": "open", "since": str(NOW - 90)}, "fail", "OPEN for 90s"),
    ({"state": "half_open", "since": str(NOW - 5)}, "warn", "half-open"),
    ({"state": "sideways"}, "warn", "unknown state"),
])
def test_circuit_breaker_states(data: dict[str, str], status: str, phrase: str) -> None:
    check = check_breaker(describe_breaker("exchange", data, NOW), "warn")
    assert check["status"] == status
    assert phrase in check["msg"]


def test_expected_breaker_missing_warns_and_none_registered_is_ok() -> None:
    checks, _ = breaker_evaluate({"exchange": {"state": "closed", "since": "1"}}, ["exchange", "market_data"], NOW,
                                 "warn")
    assert {c["name"]: c["status"] for c in checks} == {"circuit:exchange": "ok", "circuit:market_data": "warn"}
    checks, _ = breaker_evaluate({}, [], NOW, "warn")
    assert checks[0]["status"] == "ok"


MD_PARAMS = {"max_age": 300.0, "max_age_overrides": {"DOGE/USDT": 900}, "lookback": 86400.0}


@pytest.mark.parametrize(("rows", "statuses"), [
    ([("BTC/USDT", 2.0, "t")], ["ok"]),
    ([("BTC/USDT", 301.0, "t")], ["fail"]),
    ([("BTC/USDT", None, None)], ["fail"]),
    ([("DOGE/USDT", 600.0, "t")], ["ok"]),
    ([("DOGE/USDT", 901.0, "t"), ("BTC/USDT", 1.0, "t")], ["fail", "ok"]),
    ([], ["fail"]),
])
def test_market_data_freshness_per_symbol(rows: list[tuple[str, float | None, str | None]],
                                          statuses: list[str]) -> None:
    assert [c["status"] for c in market_data_evaluate(rows, MD_PARAMS)] == statuses


RISK_PARAMS = {"max_hourly_loss": 1000.0, "loss_window": 3600.0, "max_daily_loss_percent": 5.0,
               "check_daily_loss": True}


def test_loss_above_the_hourly_limit_fails_and_names_the_losers() -> None:
    by_agent = [("scalping", -900.0), ("momentum", -200.0), ("pairs", 50.0)]
    by_symbol = [("BTC/USDT", -1100.0), ("ETH/USDT", 50.0)]
    check, total, agents, symbols = check_window(by_agent, by_symbol, RISK_PARAMS)
    assert check["status"] == "fail"
    assert total == -1050.0
    assert [a["agent"] for a in agents] == ["scalping", "momentum"]
    assert symbols == [{"symbol": "BTC/USDT", "pnl": -1100.0}]
    assert "scalping" in check["msg"]
    assert "BTC/USDT" in check["msg"]


@pytest.mark.parametrize(("pnl", "status"), [(-999.0, "ok"), (-1000.0, "ok"), (-1000.01, "fail"), (5000.0, "ok")])
def test_hourly_loss_boundary(pnl: float, status: str) -> None:
    assert check_window([("a", pnl)], [("s", pnl)], RISK_PARAMS)[0]["status"] == status


@pytest.mark.parametrize(("portfolio", "error", "status", "phrase"), [
    ({"value": "96000", "day_open_value": "100000"}, None, "ok", "-4.00 %"),
    ({"value": "94000", "day_open_value": "100000"}, None, "fail", "lost 6.00 %"),
    ({}, None, "warn", "missing"),
    ({"value": "x", "day_open_value": "100000"}, None, "warn", "lacks numeric"),
    (None, "cannot connect", "fail", "cannot read the portfolio"),
])
def test_daily_loss_against_day_open_value(portfolio: dict[str, str] | None, error: str | None, status: str,
                                           phrase: str) -> None:
    check, _ = check_daily(portfolio, RISK_PARAMS, error)
    assert check["status"] == status
    assert phrase in check["msg"]


# ---------------------------------------------------------------- positions reconciliation
class PositionsRedis:
    def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
        self.hashes = hashes

    def scan_iter(self, match: str, count: int = 0) -> list[str]:
        return [key for key in self.hashes if key.startswith(match.rstrip("*"))]

    def pipeline(self, transaction: bool = False) -> PositionsRedis:
        self.queued: list[str] = []
        return self

    def hgetall(self, key: str) -> None:
        self.queued.append(key)

    def execute(self) -> list[dict[str, str]]:
        return [self.hashes[key] for key in self.queued]


class PositionsPostgres:
    """trades as (agent, symbol, side, quantity, iso timestamp); answers Q_POSITIONS by summing them."""

    def __init__(self, trades: list[tuple[str, str, str, float, str]]) -> None:
        self.trades, self.asked = trades, []

    def execute(self, query: str, args: tuple[str, str, str]) -> PositionsPostgres:
        assert query == Q_POSITIONS
        agent, since, as_of = args
        self.asked.append(args)
        sums: dict[str, float] = {}
        for who, symbol, side, quantity, stamp in self.trades:
            if who == agent and since <= stamp <= as_of:
                sums[symbol] = sums.get(symbol, 0.0) + (quantity if side == "buy" else -quantity)
        self.rows = list(sums.items())
        return self

    def fetchall(self) -> list[tuple[str, float]]:
        return self.rows

    def close(self) -> None:
        pass


POSITION_PARAMS = {"key_prefix": "sapphire", "positions_tolerance": 1e-6, "trades_retention_days": 0,
                   "redis_host": "127.0.0.1", "redis_port": 16379, "postgres_host": "127.0.0.1",
                   "postgres_port": 15432, "postgres_database": "sapphire"}
TRADES = [("momentum", "BTC/USDT", "buy", 7.0, "2027-01-15T07:00:00+00:00"),  # before _since: not in the positions
          ("momentum", "BTC/USDT", "buy", 1.0, "2027-01-15T08:00:00+00:00"),
          ("momentum", "BTC/USDT", "sell", 0.25, "2027-01-15T08:01:00+00:00"),
          ("momentum", "ETH/USDT", "buy", 2.0, "2027-01-15T08:01:00+00:00"),
          ("momentum", "BTC/USDT", "buy", 5.0, "2027-01-15T08:02:00+00:00"),  # after _as_of: not yet in Redis
          ("pairs", "SOL/USDT", "sell", 3.0, "2027-01-15T08:00:00+00:00")]


def positions(hashes: dict[str, dict[str, str]], trades: list[tuple[str, str, str, float, str]] = TRADES,
              **changes: Any) -> dict[str, Any]:
    db = PositionsPostgres(trades)
    return positions_collect({**POSITION_PARAMS, **changes}, lambda _p: PositionsRedis(hashes), lambda _p: db,
                             now=lambda: 1_800_000_000.0)  # 2027-01-15T08:00:00Z


def kept(**fields: str) -> dict[str, str]:
    return {"_as_of": "2027-01-15T08:01:00+00:00", "_since": "2027-01-15T08:00:00+00:00", **fields}


def test_positions_that_equal_the_trades_from_since_to_as_of_agree_while_other_trades_are_not_counted() -> None:
    result = positions({"sapphire:positions:momentum": kept(**{"BTC/USDT": "0.75", "ETH/USDT": "2.0000000001"}),
                        "sapphire:positions:pairs": kept(**{"SOL/USDT": "-3"})})
    assert result["healthy"] is True and result["mismatches"] == []
    assert [(c["name"], c["status"]) for c in result["checks"]] == [("positions:momentum", "ok"),
                                                                   ("positions:pairs", "ok")]


def test_a_mismatch_fails_naming_the_agent_the_symbol_and_both_values() -> None:
    result = positions({"sapphire:positions:momentum": kept(**{"BTC/USDT": "1.75", "ETH/USDT": "2"}),
                        "sapphire:positions:pairs": kept()})
    assert result["healthy"] is False
    assert result["mismatches"] == [{"agent": "momentum", "symbol": "BTC/USDT", "redis": 1.75, "trades": 0.75},
                                    {"agent": "pairs", "symbol": "SOL/USDT", "redis": 0.0, "trades": -3.0}]
    (momentum, pairs) = result["problems"]
    assert "agent momentum" in momentum and "BTC/USDT is 1.75 in Redis but its trades net 0.75" in momentum
    assert "ETH/USDT" not in momentum
    assert "SOL/USDT is 0 in Redis but its trades net -3" in pairs


def test_positions_older_than_the_trades_retention_are_skipped_not_failed() -> None:
    result = positions({"sapphire:positions:momentum": kept(**{"BTC/USDT": "9"}, _since="2026-09-01T00:00:00+00:00")},
                       trades_retention_days=90)
    (check,) = result["checks"]
    assert check["status"] == "skipped" and "predate the trades' retention (90 days)" in check["msg"]
    assert positions({"sapphire:positions:momentum": kept(**{"BTC/USDT": "0.75", "ETH/USDT": "2"})},
                     trades_retention_days=90)["healthy"] is True


@pytest.mark.parametrize("data", [{"BTC/USDT": "1"}, kept(**{"BTC/USDT": "lots"}),
                                  {"BTC/USDT": "1", "_as_of": "2027-01-15T08:01:00+00:00"}])
def test_a_hash_that_is_not_a_positions_hash_fails(data: dict[str, str]) -> None:
    (check,) = positions({"sapphire:positions:momentum": data})["checks"]
    assert check["status"] == "fail" and "is not a positions hash" in check["msg"]


def test_no_positions_is_skipped_and_an_unreachable_store_fails() -> None:
    (check,) = positions({})["checks"]
    assert check["status"] == "skipped"

    def refused(_params: dict[str, Any]) -> Any:
        raise ConnectionError("Connection refused")

    down = positions_collect(POSITION_PARAMS, refused, lambda _p: PositionsPostgres([]))
    assert down["healthy"] is False and "Connection refused" in down["checks"][0]["msg"]
    down = positions_collect(POSITION_PARAMS, lambda _p: PositionsRedis({"sapphire:positions:a": kept()}), refused)
    assert down["healthy"] is False and "Connection refused" in down["checks"][0]["msg"]
