"""The canary analysis of roles/agents (agents_canary_analysis, its shipped queries and conditions) run by
sapphire_release_analysis against a real Prometheus scraping the synthetic workload, on servers of the test's own.

The workload runs the lightweight agent `breakout` at the stable release 2026.11.0 and its canary at 2026.12.1 beside
it. A canary told to misbehave (errors, silent heartbeats, losses) is Failed, naming what broke; a healthy canary is
Successful; an analysis of a release nobody runs fails on its heartbeats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import (
    QUIET_RULES,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    load_library_module,
    start_prometheus,
    start_workload,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow]

analysis = load_library_module("sapphire_release_analysis")  # module_utils importable as Ansible ships them

REPO = Path(__file__).resolve().parents[2]
STABLE, CANARY = "2026.11.0", "2026.12.1"
AGENTS = [{"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1},
          {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1,
           "release": CANARY}]


def shipped_analysis() -> dict[str, Any]:
    return yaml.safe_load((REPO / "roles" / "agents" / "defaults" / "main.yml").read_text())["agents_canary_analysis"]


@pytest.fixture
def canary(request: pytest.FixtureRequest, tmp_path: Path, throwaway_redis: RedisServer,
           throwaway_postgres: PostgresServer) -> Iterator[PrometheusServer]:
    """The workload (the canary misbehaving as the test's parameter says) and a Prometheus scraping it."""
    workload = start_workload(tmp_path, throwaway_redis, throwaway_postgres, AGENTS,
                              "--misbehave", json.dumps(request.param))
    prometheus = start_prometheus(tmp_path, QUIET_RULES, targets=(f"127.0.0.1:{workload.port}",))
    try:
        def scraped() -> bool:
            answer = requests.get(f"{prometheus.url}/api/v1/query", timeout=5, params={
                "query": 'count(count_over_time(sapphire_agent_decisions_total{tier="lightweight"}[1m]) >= 3)'}).json()
            return bool(answer["data"]["result"]) and answer["data"]["result"][0]["value"][1] == "2"
        wait_for(scraped, 60, "three scrapes of both releases")
        yield prometheus
    finally:
        stop_process(prometheus.proc)
        stop_process(workload.proc)


def analyse(prometheus: PrometheusServer, release: str) -> dict[str, Any]:
    template = shipped_analysis()
    return analysis.analysis_collect({"url": prometheus.url, "metrics": template["metrics"], "connect_timeout": 5,
                             "validate_certs": True, "ca_path": None, "interval": 1, "count": 3, "initial_delay": 0,
                             "args": {"release": release, "stable": STABLE, "tier": "lightweight",
                                      "window": template["window"]}}, analysis.http_get)


BAD = {"release": CANARY, "error_rate": 0.5, "stale_heartbeats": True, "loss_per_trade": 60}


@pytest.mark.parametrize("canary", [BAD], indirect=True)
def test_a_misbehaving_canary_fails_the_shipped_analysis_naming_what_broke(canary: PrometheusServer) -> None:
    result = analyse(canary, CANARY)
    assert result["phase"] == "Failed", result["msg"]
    failed = {metric["name"] for metric in result["metrics"] if metric["phase"] == "Failed"}
    assert failed & {"error-rate", "heartbeat-age", "excess-loss"}, result["msg"]
    assert all(metric["phase"] in ("Failed", "Terminated") for metric in result["metrics"]), result["metrics"]
    heartbeat = next(metric for metric in result["metrics"] if metric["name"] == "heartbeat-age")
    assert heartbeat["measurements"][0]["value"] > 60, "a canary that never beats is as old as the epoch"


@pytest.mark.parametrize("canary", [{}], indirect=True)
def test_a_healthy_canary_passes_the_shipped_analysis(canary: PrometheusServer) -> None:
    result = analyse(canary, CANARY)
    assert result["phase"] == "Successful", result["msg"]
    assert [len(metric["measurements"]) for metric in result["metrics"]] == [3, 3, 3, 3]
    error_rate = next(metric for metric in result["metrics"] if metric["name"] == "error-rate")
    assert {item["value"] for item in error_rate["measurements"]} == {0.0}
