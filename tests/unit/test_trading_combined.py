"""sapphire_trading_info: the six trading checks in one call, with fake Redis, PostgreSQL and HTTP."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    POSTGRES_ARGUMENT_SPEC,
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
)
from ansible.module_utils.sapphire_trading import (
    BREAKER_SPEC,
    COORDINATOR_SPEC,
    HEARTBEAT_SPEC,
    MARKET_DATA_SPEC,
    Q_BY_AGENT,
    Q_BY_SYMBOL,
    Q_DISCOVER,
    Q_POSITIONS,
    Q_SYMBOLS,
    RISK_SPEC,
    breaker_collect,
    heartbeat_collect,
    market_data_collect,
    risk_collect,
)
from conftest import REPO_ROOT, load_module

trading = load_module("sapphire_trading_info")

NOW = 1_800_000_000.0
COMPONENTS = ["heartbeats", "circuit_breakers", "coordinator", "market_data", "risk", "positions"]
AGENTS = [{"name": "momentum", "tier": "standard", "replicas": 2}, {"name": "scalping", "tier": None, "replicas": 1}]
METRICS = ('portfolio_value 1\ntrading_signals_total{symbol="BTC"} 3\nagent_activity_score{agent="a"} 1\n'
           'circuit_breaker_state{name="exchange"} 0\n')


class FakePipeline:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data, self.replies = data, []

    def hgetall(self, key: str) -> None:
        self.replies.append(self.data.get(key) or {})

    def get(self, key: str) -> None:
        self.replies.append(self.data.get(key))

    def execute(self) -> list[Any]:
        return self.replies


class FakeRedis:
    """The few redis-py calls the checks make, over a dict of keys."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self.data)

    def scan_iter(self, match: str, count: int = 0) -> list[str]:
        return [key for key in self.data if fnmatch.fnmatchcase(key, match)]

    def hgetall(self, key: str) -> dict[str, str]:
        return self.data.get(key) or {}


class FakeConnection:
    """A psycopg connection answering the checks' queries from canned rows."""

    def __init__(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        self.rows, self.result = rows, []

    def execute(self, query: str, _args: tuple[Any, ...]) -> FakeConnection:
        self.result = self.rows[query]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.result

    def close(self) -> None:
        pass


def healthy_redis(**changes: Any) -> FakeRedis:
    data: dict[str, Any] = {
        "sapphire:agent:momentum:heartbeat": {"ts": str(NOW - 3), "status": "running", "tier": "standard"},
        "sapphire:agent:scalping:heartbeat": {"ts": str(NOW - 5), "status": "running"},
        "sapphire:circuit:exchange": {"state": "closed", "since": str(NOW - 600)},
        "sapphire:circuit:market_data": {"state": "closed", "since": str(NOW - 600)},
        "sapphire:portfolio": {"value": "99000", "day_open_value": "100000"},
        "sapphire:positions:momentum": {"BTC/USDT": "1.5", "_as_of": "2027-01-15T08:00:00+00:00",
                                        "_since": "2027-01-14T08:00:00+00:00"},
    }
    return FakeRedis({**data, **changes})


def healthy_postgres(_params: dict[str, Any]) -> FakeConnection:
    return FakeConnection({Q_DISCOVER: [("BTC/USDT", 2.0, "t")], Q_SYMBOLS: [("BTC/USDT", 2.0, "t")],
                           Q_BY_AGENT: [("momentum", 12.5)], Q_BY_SYMBOL: [("BTC/USDT", 12.5)],
                           Q_POSITIONS: [("BTC/USDT", 1.5)]})


def healthy_get(url: str, _params: dict[str, Any], _accept: str = "*/*") -> tuple[int | None, str, str | None]:
    if url.endswith("/health"):
        return 200, json.dumps({"status": "ok", "components": {}}), None
    return 200, METRICS, None


def refused(_params: dict[str, Any]) -> Any:
    raise ConnectionError("Connection refused")


def params(**changes: Any) -> dict[str, Any]:
    """The module's params (defaults as AnsibleModule fills them) with every endpoint given."""
    values = {name: option.get("default") for name, option in trading.ARGUMENT_SPEC.items()}
    values.update(redis_host="127.0.0.1", postgres_host="127.0.0.1", coordinator_url="http://coordinator:8000",
                  connect_timeout=1.0, agents=AGENTS, expected_breakers=["exchange", "market_data"])
    values.update(changes)
    return values


def collect(redis: FakeRedis | None = None, *, options: dict[str, Any] | None = None,
            connect_redis: Callable[[dict[str, Any]], Any] | None = None,
            connect_pg: Callable[[dict[str, Any]], Any] = healthy_postgres,
            get: Callable[..., tuple[int | None, str, str | None]] = healthy_get) -> dict[str, Any]:
    """The module's collect with healthy fakes for whatever the test does not replace."""
    return trading.collect(options or params(), connect_redis=connect_redis or (lambda _p: redis or healthy_redis()),
                           connect_pg=connect_pg, get=get, now=lambda: NOW)


def test_healthy_platform_reports_all_five_components() -> None:
    result = collect()
    assert list(result["reports"]) == COMPONENTS
    assert result["healthy"] is True, result["problems"]
    assert result["problems"] == []
    assert all(report["healthy"] for report in result["reports"].values())
    names = [item["name"] for item in result["checks"]]
    assert "heartbeats/heartbeat:momentum" in names
    assert "circuit_breakers/circuit:exchange" in names
    assert "coordinator/coordinator_health" in names
    assert "market_data/market_data:BTC/USDT" in names
    assert "risk/risk_daily_loss" in names
    assert list(dict.fromkeys(name.split("/", 1)[0] for name in names)) == COMPONENTS


def test_one_failing_component_makes_the_result_unhealthy() -> None:
    redis = healthy_redis(**{"sapphire:circuit:exchange": {"state": "open", "since": str(NOW - 90)}})
    result = collect(redis)
    assert result["healthy"] is False
    unhealthy = [name for name, report in result["reports"].items() if not report["healthy"]]
    assert unhealthy == ["circuit_breakers"]
    assert [item["name"] for item in result["checks"] if item["status"] == "fail"] == [
        "circuit_breakers/circuit:exchange"]
    assert len(result["problems"]) == 1
    assert "exchange is OPEN for 90s" in result["problems"][0]


def test_each_report_is_what_the_single_module_returns() -> None:
    redis = healthy_redis(**{"sapphire:agent:momentum:heartbeat": {"ts": str(NOW - 300)}})
    mine = params(market_data_max_age=1.0, max_hourly_loss=10.0)
    result = collect(redis, options=mine)
    reports = result["reports"]
    assert reports["heartbeats"] == heartbeat_collect(mine, AGENTS, lambda _p: redis, lambda: NOW)
    assert reports["circuit_breakers"] == breaker_collect({**mine, "expected": ["exchange", "market_data"]},
                                                          lambda _p: redis, lambda: NOW)
    market_params = {**mine, "max_age": 1.0, "max_age_overrides": {}, "lookback": 86400.0}
    assert reports["market_data"] == market_data_collect(market_params, healthy_postgres)
    assert reports["risk"] == risk_collect(mine, healthy_postgres, lambda _p: redis)
    assert not reports["market_data"]["healthy"]  # 2s old > 1s
    assert reports["heartbeats"]["stale"] == ["momentum"]


@pytest.mark.parametrize(("missing", "skipped", "variable"), [
    ({"redis_host": None}, ["heartbeats", "circuit_breakers", "positions"], "validate_redis_endpoint"),
    ({"redis_host": ""}, ["heartbeats", "circuit_breakers", "positions"], "validate_redis_endpoint"),
    ({"postgres_host": None}, ["market_data", "risk", "positions"], "validate_postgres_endpoint"),
    ({"coordinator_url": ""}, ["coordinator"], "validate_coordinator_url"),
])
def test_missing_endpoint_is_a_skipped_report_naming_the_variable(missing: dict[str, Any], skipped: list[str],
                                                                  variable: str) -> None:
    result = collect(options=params(**missing))
    assert list(result["reports"]) == COMPONENTS
    for name in skipped:
        report = result["reports"][name]
        assert report["healthy"] is True
        assert report["target"] == name
        assert report["problems"] == []
        assert len(report["checks"]) == 1
        assert report["checks"][0]["name"] == name
        assert report["checks"][0]["status"] == "skipped"
        assert variable in report["checks"][0]["msg"]
    ran = [name for name, report in result["reports"].items() if report["checks"][0]["status"] != "skipped"]
    assert ran == [name for name in COMPONENTS if name not in skipped]
    assert result["healthy"] is True


def test_risk_without_redis_does_not_check_the_daily_loss() -> None:
    result = collect(options=params(redis_host=None), connect_redis=refused)
    checks = {item["name"]: item["status"] for item in result["reports"]["risk"]["checks"]}
    assert checks == {"risk_window_pnl": "ok", "risk_daily_loss": "skipped"}


def test_warm_standby_checks_only_heartbeats_and_breakers() -> None:
    silent = [{**agent, "replicas": 0} for agent in AGENTS]
    result = collect(FakeRedis({}), options=params(trading=False, agents=silent, expected_breakers=[]),
                     connect_pg=refused, get=lambda *_args: pytest.fail("the coordinator is not called"))
    assert result["healthy"] is True
    for name in ("coordinator", "market_data", "risk"):
        check = result["reports"][name]["checks"][0]
        assert check["status"] == "skipped"
        assert check["msg"] == "warm standby region (agents scaled to zero): not trading"
    heartbeats = {item["name"]: item["status"] for item in result["reports"]["heartbeats"]["checks"]}
    assert heartbeats["redis_reachable"] == "ok"
    assert heartbeats["heartbeat:momentum"] == "skipped"
    assert result["reports"]["circuit_breakers"]["checks"][1]["name"] == "circuit_breakers"


def test_checks_option_selects_components() -> None:
    result = collect(options=params(checks=["coordinator"]), connect_redis=refused, connect_pg=refused)
    assert result["healthy"] is True
    statuses = {name: report["checks"][0]["status"] for name, report in result["reports"].items()}
    assert statuses == {name: "ok" if name == "coordinator" else "skipped" for name in COMPONENTS}
    assert "not selected" in result["reports"]["risk"]["checks"][0]["msg"]


def test_unreachable_database_fails_only_the_components_that_use_it() -> None:
    result = collect(connect_pg=refused)
    assert result["healthy"] is False
    healthy = {name: report["healthy"] for name, report in result["reports"].items()}
    assert healthy == {"heartbeats": True, "circuit_breakers": True, "coordinator": True, "market_data": False,
                       "risk": False, "positions": False}
    assert result["reports"]["market_data"]["checks"][0]["name"] == "postgres_reachable"
    assert "Connection refused" in result["reports"]["risk"]["checks"][0]["msg"]


def test_exception_in_one_check_is_a_failing_check_of_that_component_only() -> None:
    def broken_get(*_args: Any) -> tuple[int | None, str, str | None]:
        raise RuntimeError("TLS handshake exploded")

    result = collect(get=broken_get)
    assert result["healthy"] is False
    report = result["reports"]["coordinator"]
    assert report["healthy"] is False
    assert report["checks"] == [{"name": "coordinator", "status": "fail", "observed": None, "threshold": None,
                                 "msg": "the check stopped: RuntimeError: TLS handshake exploded"}]
    assert report["problems"] == ["coordinator: the check stopped: RuntimeError: TLS handshake exploded"]
    assert all(result["reports"][name]["healthy"] for name in COMPONENTS if name != "coordinator")


def test_checks_run_concurrently() -> None:
    # market_data, risk and coordinator each wait for the other two: run one after another, they would time out.
    barrier = threading.Barrier(3, timeout=10)

    def connect_pg(params: dict[str, Any]) -> FakeConnection:
        barrier.wait()
        return healthy_postgres(params)

    def get(url: str, params: dict[str, Any], accept: str = "*/*") -> tuple[int | None, str, str | None]:
        if url.endswith("/health"):
            barrier.wait()
        return healthy_get(url, params, accept)

    result = collect(options=params(redis_host=None), connect_pg=connect_pg, get=get)
    assert result["healthy"] is True, result["problems"]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_main_with_only_an_unreachable_coordinator(module_runner: Any) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    result = module_runner("sapphire_trading_info", {"coordinator_url": url, "connect_timeout": 0.5,
                                                     "redis_password": "hunter2-secret", "agents": AGENTS})
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["healthy"] is False
    assert list(result["reports"]) == COMPONENTS
    coordinator = result["reports"]["coordinator"]
    assert coordinator["target"] == f"coordinator {url}"
    assert [item["status"] for item in coordinator["checks"]] == ["fail", "fail"]
    assert "coordinator unreachable" in coordinator["checks"][0]["msg"]
    for name in ("heartbeats", "circuit_breakers", "market_data", "risk"):
        assert result["reports"][name]["checks"][0]["status"] == "skipped"
    assert [item["name"] for item in result["checks"] if item["status"] != "skipped"] == [
        "coordinator/coordinator_health", "coordinator/coordinator_metrics"]
    assert "hunter2-secret" not in json.dumps(result)


def documented_options(module: Any) -> dict[str, dict[str, Any]]:
    """A module's options as ansible-doc shows them: its fragments, overridden by its own options."""
    spec = importlib.util.spec_from_file_location("sapphire_doc_fragments", REPO_ROOT / "doc_fragments" / "sapphire.py")
    assert spec and spec.loader
    fragments = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fragments)
    doc = yaml.safe_load(module.DOCUMENTATION)
    options: dict[str, dict[str, Any]] = {}
    for name in doc["extends_documentation_fragment"]:
        text = getattr(fragments.ModuleDocFragment, name.split(".", 1)[1].upper())
        options.update(yaml.safe_load(text).get("options", {}))
    for name, option in doc.get("options", {}).items():
        options[name] = {**options.get(name, {}), **option}
    return options


@pytest.mark.parametrize(("name", "parts"), [
    ("sapphire_trading_info", None),
    ("sapphire_heartbeat_info", (REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, HEARTBEAT_SPEC)),
    ("sapphire_circuit_breaker_info", (REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, BREAKER_SPEC)),
    ("sapphire_coordinator_info", (HTTP_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, COORDINATOR_SPEC)),
    ("sapphire_market_data_info", (POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, MARKET_DATA_SPEC)),
    ("sapphire_risk_info", (POSTGRES_ARGUMENT_SPEC, REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, RISK_SPEC)),
])
def test_documentation_matches_the_argument_spec(name: str, parts: tuple[dict[str, Any], ...] | None) -> None:
    module = load_module(name)
    expected = trading.ARGUMENT_SPEC if parts is None else argument_spec(*parts)
    documented = documented_options(module)
    assert set(documented) == set(expected)
    for option_name, option in expected.items():
        doc = documented[option_name]
        assert doc["type"] == option["type"], option_name
        assert doc.get("default") == option.get("default"), option_name
        assert doc.get("choices") == option.get("choices"), option_name
        assert doc.get("elements") == option.get("elements"), option_name
        assert bool(doc.get("required")) == bool(option.get("required")), option_name
    passwords = [option_name for option_name in expected if option_name.endswith("_password")]
    assert all(expected[option_name]["no_log"] is True for option_name in passwords)
