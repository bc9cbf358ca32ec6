"""Prometheus alerts and the coordinator endpoints, with a fake HTTP getter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import load_module

alerts = load_module("sapphire_alerts_info")
coordinator = load_module("sapphire_coordinator_info")


def alert(name: str, severity: str, state: str = "firing") -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "instance": "redis:6379"},
        "annotations": {"summary": f"{name} summary"},
        "state": state,
        "activeAt": "2026-11-21T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("firing", "critical", "warning"),
    [
        ([], "ok", "ok"),
        ([alert("RedisDown", "critical")], "fail", "ok"),
        ([alert("HighLatency", "warning")], "ok", "warn"),
        ([alert("RedisDown", "critical", "pending")], "ok", "ok"),
        ([alert("Watchdog", "critical")], "ok", "ok"),
        ([alert("Info", "info")], "ok", "ok"),
    ],
)
def test_alerts_by_severity(firing: list[dict[str, Any]], critical: str, warning: str) -> None:
    checks, _, _ = alerts.evaluate(firing, ["Watchdog"])
    assert [c["status"] for c in checks] == [critical, warning]


def fake_get(responses: dict[str, tuple[int | None, str, str | None]]):
    def get(url: str, _params: dict[str, Any], _accept: str = "*/*") -> tuple[int | None, str, str | None]:
        for suffix, response in responses.items():
            if url.endswith(suffix):
                return response
        return 404, "", None

    return get


def test_firing_critical_alert_names_the_alert() -> None:
    body = json.dumps({"status": "success", "data": {"alerts": [alert("PostgreSQLDown", "critical")]}})
    result = alerts.collect(
        {"url": "http://p:9090/", "ignore_alerts": []}, fake_get({"/api/v1/alerts": (200, body, None)})
    )
    assert result["healthy"] is False
    assert "PostgreSQLDown" in " ".join(result["problems"])
    assert result["firing"]["critical"][0]["name"] == "PostgreSQLDown"


@pytest.mark.parametrize(
    "response", [(None, "", "cannot reach http://p:9090: refused"), (503, "down", None), (200, "not json", None)]
)
def test_unreadable_prometheus_fails(response: tuple[int | None, str, str | None]) -> None:
    result = alerts.collect({"url": "http://p:9090"}, fake_get({"/api/v1/alerts": response}))
    assert result["checks"][0]["name"] == "prometheus_reachable"
    assert result["checks"][0]["status"] == "fail"


METRICS = (
    '# TYPE portfolio_value gauge\nportfolio_value 1\ntrading_signals_total{symbol="BTC"} 3\n'
    'agent_activity_score{agent="a"} 1\ncircuit_breaker_state{name="exchange"} 0\n'
)
REQUIRED = ["portfolio_value", "trading_signals_total", "agent_activity_score", "circuit_breaker_state"]


@pytest.mark.parametrize(
    ("health", "status", "phrase"),
    [
        ((200, json.dumps({"status": "ok", "components": {}}), None), "ok", "healthy"),
        (
            (
                500,
                json.dumps({"status": "fail", "components": {"redis": {"status": "fail", "error": "refused"}}}),
                None,
            ),
            "fail",
            "HTTP 500",
        ),
        (
            (200, json.dumps({"status": "degraded", "components": {"writer": {"status": "degraded"}}}), None),
            "warn",
            "writer=degraded",
        ),
        ((200, json.dumps({"status": "fail"}), None), "fail", "status fail"),
        ((None, "", "cannot reach http://c:8000/health: refused"), "fail", "unreachable"),
        ((200, "<html>", None), "warn", "without a known status"),
    ],
)
def test_coordinator_health(health: tuple[int | None, str, str | None], status: str, phrase: str) -> None:
    check, _ = coordinator.check_health(*health, "http://c:8000")
    assert check["status"] == status
    assert phrase in check["msg"]


@pytest.mark.parametrize(
    ("metrics", "status"),
    [
        ((200, METRICS, None), "ok"),
        ((200, "portfolio_value 1\n", None), "warn"),
        ((200, "<html>oops</html>", None), "fail"),
        ((404, "", None), "fail"),
    ],
)
def test_coordinator_metrics(metrics: tuple[int | None, str, str | None], status: str) -> None:
    check, _ = coordinator.check_metrics(*metrics, REQUIRED)
    assert check["status"] == status
