"""sapphire_trading_gate: a risky operation is refused while open positions are worth too much, inside market hours,
or when the positions cannot be valued, unless an override gives a reason."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.sapphire_connections import POSTGRES_ARGUMENT_SPEC, REDIS_ARGUMENT_SPEC, argument_spec
from ansible.module_utils.sapphire_gate import (
    GATE_SPEC,
    Q_PRICES,
    exposure_collect,
    gate_collect,
    gate_decide,
)
from ansible.module_utils.sapphire_market_hours import market_window, parse_market_hours
from test_trading_combined import FakeConnection, FakeRedis, refused

UTC = datetime.timezone.utc  # noqa: UP017
# Wednesday 2026-12-09 15:00 UTC is 10:00 in New York (EST, UTC-5).
WEDNESDAY_10_NY = datetime.datetime(2026, 12, 9, 15, 0, tzinfo=UTC)
NYSE = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:30", "end": "16:00",
         "timezone": "America/New_York"}]


def params(**changes: Any) -> dict[str, Any]:
    spec = argument_spec(REDIS_ARGUMENT_SPEC, POSTGRES_ARGUMENT_SPEC, GATE_SPEC)
    values = {name: option.get("default") for name, option in spec.items()}
    values.update(operation="release 2", max_open_notional=1000.0, redis_host="127.0.0.1", postgres_host="127.0.0.1",
                  redis_port=6379, postgres_port=5432)
    values.update(changes)
    return values


def positions(**agents: dict[str, str]) -> FakeRedis:
    return FakeRedis({f"sapphire:positions:{agent}": {**held, "_as_of": "t", "_since": "t"}
                      for agent, held in agents.items()})


def prices(rows: list[tuple[str, float | None]]) -> Any:
    return lambda _params: FakeConnection({Q_PRICES: rows})


def test_the_exposure_is_the_gross_notional_at_the_newest_price() -> None:
    redis = positions(momentum={"BTC/USDT": "0.5", "ETH/USDT": "-2"}, scalping={"BTC/USDT": "-0.25", "SOL/USDT": "0"})
    found = exposure_collect(params(), lambda _p: redis, prices([("BTC/USDT", 100.0), ("ETH/USDT", 10.0)]))
    # |0.5| * 100 + |-2| * 10 = 70; |-0.25| * 100 = 25 (a flat SOL position is not open and needs no price).
    assert found == {"measured": True, "error": "", "total": 95.0, "by_agent": {"momentum": 70.0, "scalping": 25.0},
                     "unpriced": []}


def test_a_symbol_without_a_price_leaves_the_exposure_unmeasured() -> None:
    found = exposure_collect(params(), lambda _p: positions(momentum={"DOGE/USDT": "3"}), prices([("DOGE/USDT", None)]))
    assert not found["measured"] and found["unpriced"] == ["DOGE/USDT"] and "DOGE/USDT" in found["error"]


@pytest.mark.parametrize(("redis", "pg", "said"), [
    (refused, prices([]), "redis 127.0.0.1:6379"),
    (lambda _p: positions(momentum={"BTC/USDT": "1"}), refused, "postgres 127.0.0.1:5432/sapphire"),
])
def test_an_unreachable_store_leaves_the_exposure_unmeasured(redis: Any, pg: Any, said: str) -> None:
    found = exposure_collect(params(), redis, pg)
    assert not found["measured"] and said in found["error"]


def test_without_a_reachable_primary_nothing_is_measured() -> None:
    found = exposure_collect(params(redis_host=""), refused, refused)
    assert not found["measured"] and "no live primary" in found["error"]


def test_no_open_position_is_zero_and_needs_no_database() -> None:
    found = exposure_collect(params(), lambda _p: FakeRedis({}), refused)
    assert found["measured"] and found["total"] == 0


@pytest.mark.parametrize(("now", "inside"), [
    (WEDNESDAY_10_NY, True),
    (datetime.datetime(2026, 12, 9, 14, 29, tzinfo=UTC), False),   # 09:29 New York
    (datetime.datetime(2026, 12, 9, 21, 0, tzinfo=UTC), False),    # 16:00 New York: the end is outside
    (datetime.datetime(2026, 12, 12, 15, 0, tzinfo=UTC), False),   # Saturday
    (datetime.datetime(2026, 7, 8, 13, 45, tzinfo=UTC), True),     # 09:45 New York in summer time (UTC-4)
])
def test_market_hours_are_read_in_their_time_zone(now: datetime.datetime, inside: bool) -> None:
    assert bool(market_window(parse_market_hours(NYSE), now)) is inside


@pytest.mark.parametrize(("now", "inside"), [
    (datetime.datetime(2026, 12, 6, 23, 0, tzinfo=UTC), True),    # Sunday 23:00, the window's start day
    (datetime.datetime(2026, 12, 7, 1, 0, tzinfo=UTC), True),     # Monday 01:00, still Sunday's window
    (datetime.datetime(2026, 12, 5, 23, 0, tzinfo=UTC), False),   # Saturday 23:00
    (datetime.datetime(2026, 12, 7, 2, 0, tzinfo=UTC), False),    # Monday 02:00, the end
])
def test_an_overnight_window_belongs_to_its_start_day(now: datetime.datetime, inside: bool) -> None:
    windows = parse_market_hours([{"days": ["sun"], "start": "22:00", "end": "02:00"}])
    assert bool(market_window(windows, now)) is inside


@pytest.mark.parametrize(("window", "named"), [
    ({"days": ["mon"], "start": "9:30", "end": "16:00"}, "market_hours[0].start"),
    ({"days": ["monday"], "start": "09:30", "end": "16:00"}, "market_hours[0].days"),
    ({"days": "mon", "start": "09:30", "end": "16:00"}, "market_hours[0].days"),
    ({"start": "09:30", "end": "24:00"}, "market_hours[0].end"),
    ({"start": "09:30", "end": "16:00", "timezone": "Mars/Olympus"}, "market_hours[0].timezone"),
    ({"start": "09:30", "end": "09:30"}, "market_hours[0]: start and end"),
    ({"start": "09:30", "end": "16:00", "tz": "UTC"}, "market_hours[0] has unknown key(s) tz"),
])
def test_a_bad_window_is_refused_by_its_field(window: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_market_hours([window])


MEASURED = {"measured": True, "error": "", "total": 5000.0, "by_agent": {"momentum": 4000.0, "scalping": 1000.0},
            "unpriced": []}


def test_positions_above_the_threshold_refuse_and_name_the_largest_agents() -> None:
    decision = gate_decide("release 2", MEASURED, "", 1000.0, "")
    assert not decision["allowed"] and not decision["overridden"]
    assert decision["msg"] == ("release 2: refused because open positions are worth 5,000.00 USD, above the "
                               "1,000.00 USD threshold (largest: momentum 4,000.00, scalping 1,000.00)")


def test_below_the_threshold_and_outside_market_hours_it_is_allowed_without_an_override() -> None:
    decision = gate_decide("release 2", MEASURED, "", 5000.0, "a reason nobody needed")
    assert decision["allowed"] and not decision["overridden"] and decision["reason"] == ""


def test_market_hours_refuse_even_when_flat() -> None:
    flat = {**MEASURED, "total": 0.0, "by_agent": {}}
    decision = gate_decide("resume", flat, "mon 09:30-16:00 UTC", 1000.0, "")
    assert not decision["allowed"] and decision["refusals"] == ["it is inside the market hours mon 09:30-16:00 UTC"]


def test_unvalued_positions_refuse() -> None:
    decision = gate_decide("cleanup", {"measured": False, "error": "redis down", "total": None, "by_agent": {},
                                       "unpriced": []}, "", 1e12, "  ")
    assert not decision["allowed"] and "could not be valued (redis down)" in decision["msg"]


def test_an_override_with_a_reason_lets_a_refused_operation_through_and_keeps_the_reason() -> None:
    decision = gate_decide("release 2", MEASURED, "mon 09:30-16:00 UTC", 1000.0, " hotfix INC-42 ")
    assert decision["allowed"] and decision["overridden"] and decision["reason"] == "hotfix INC-42"
    assert len(decision["refusals"]) == 2 and "allowed by override (hotfix INC-42)" in decision["msg"]


def test_the_module_result_carries_the_decision_and_refuses_a_negative_threshold() -> None:
    result = gate_collect(params(market_hours=NYSE), lambda _p: positions(momentum={"BTC/USDT": "2"}),
                          prices([("BTC/USDT", 1000.0)]), now=lambda: WEDNESDAY_10_NY)
    assert result["allowed"] is False and result["changed"] is False
    assert result["exposure"]["total"] == 2000.0 and result["market_window"].startswith("mon/tue/wed/thu/fri 09:30")
    with pytest.raises(ValueError, match="max_open_notional"):
        gate_collect(params(max_open_notional=-1.0), refused, refused)


def gated(playbook: str) -> bool:
    """The playbook includes the agents role's gate entry point."""
    def tasks(node: Any) -> Any:
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from tasks(value)
        elif isinstance(node, list):
            for value in node:
                yield from tasks(value)

    text = (Path(__file__).resolve().parents[2] / "playbooks" / playbook).read_text()
    return any({"name": "agents", "tasks_from": "gate"}.items() <= (task.get(key) or {}).items()
               for task in tasks(yaml.safe_load(text))
               for key in ("ansible.builtin.include_role", "ansible.builtin.import_role") if isinstance(task, dict))


@pytest.mark.parametrize(("playbook", "expected"), [
    ("deploy.yml", True), ("dr-failover.yml", True), ("dr-failback.yml", True), ("resume.yml", True),
    ("cleanup.yml", True), ("emergency-stop.yml", False), ("rollback.yml", False), ("validate.yml", False),
])
def test_the_risky_operations_are_gated_and_the_emergency_stop_never(playbook: str, expected: bool) -> None:
    assert gated(playbook) is expected
