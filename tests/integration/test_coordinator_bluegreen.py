"""The coordinator released blue-green on the local-primary cluster (agents_coordinator_blue_green).

In a throw-away namespace: release A as a single Deployment, then B with blue-green on (the migration: B runs in blue,
the single Deployment is removed once the Service moved), then C (green, blue kept at B), then a rollback, which must
move the Service back to blue without a rollout. A DR fence must stop both colors and a restore bring both back.
Turned off again, the single Deployment comes back and the pointer's coordinator record is dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sapphire_testlib import REPO_ROOT, LocalClusters, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RELEASE_A, RELEASE_B, RELEASE_C = "2026.11.0", "2026.12.1", "2026.12.2"
AGENTS = [{"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1}]
# Switched once ready: the throw-away namespace serves no traffic to analyse (test_canary.py analyses a switch).
NOT_ANALYSED = {**yaml.safe_load((REPO_ROOT / "roles" / "agents" / "defaults" / "main.yml").read_text())[
    "agents_coordinator_analysis"], "count": 0}


def platform_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    # Not a test of the trading-aware gate (test_trading_gate.py): the throw-away namespace trades nothing.
    return {"sapphire_namespace": namespace, "workload_enabled": False, "agents_gate_enabled": False,
            "trading_agents": AGENTS, "agents_coordinator_blue_green": True,
            "agents_coordinator_analysis": NOT_ANALYSED,
            "coordinator_min_replicas": 1, "agents_coordinator_min_replicas": 1, **extra}


def coordinator(clusters: LocalClusters, namespace: str) -> dict[str, Any]:
    """The coordinator Deployments (release, revision, replicas), the colors the Services select, the record."""
    def get(*args: str) -> dict[str, Any]:
        return json.loads(clusters.kubectl("local-primary", "-n", namespace, "get", *args, "-o", "json").stdout)
    deployments = {item["metadata"]["name"]: {
        "release": item["metadata"]["labels"]["app.kubernetes.io/version"],
        "revision": item["metadata"]["annotations"].get("deployment.kubernetes.io/revision"),
        "replicas": item["spec"].get("replicas")}
        for item in get("deployments", "-l", "app.kubernetes.io/component=coordinator")["items"]}
    services = {item["metadata"]["name"]: item["spec"]["selector"].get("sapphire.io/color")
                for item in get("services", "-l", "app.kubernetes.io/component=coordinator")["items"]}
    record = json.loads(get("configmap", "sapphire-releases")["data"].get("coordinator") or "{}")
    return {"deployments": deployments, "services": services, "record": record}


def deploy(namespace: str, release: str, **extra: Any) -> Any:
    result = run_playbook("deploy.yml", limit="local-primary",
                          extra_vars=platform_vars(namespace, sapphire_release=release, **extra))
    assert result.rc == 0, result.explain()
    return result


@pytest.fixture(scope="module")
def namespace(local_clusters: LocalClusters) -> Iterator[str]:
    name = f"it-bluegreen-{uuid.uuid4().hex[:6]}"
    deploy(name, RELEASE_A, agents_coordinator_blue_green=False)
    yield name
    local_clusters.kubectl("local-primary", "delete", "namespace", name, "--wait=false", check=False)


def test_turning_blue_green_on_moves_the_service_to_blue_and_removes_the_single_deployment(
        namespace: str, local_clusters: LocalClusters) -> None:
    assert set(coordinator(local_clusters, namespace)["deployments"]) == {"trading-coordinator"}
    deploy(namespace, RELEASE_B)
    state = coordinator(local_clusters, namespace)
    assert {name: item["release"] for name, item in state["deployments"].items()} == {
        "trading-coordinator-blue": RELEASE_B}
    assert state["services"] == {"trading-coordinator": "blue", "trading-coordinator-preview": "blue"}
    assert state["record"] == {"active": "blue", "releases": {"blue": RELEASE_B}}
    again = run_playbook("deploy.yml", limit="local-primary",
                         extra_vars=platform_vars(namespace, sapphire_release=RELEASE_B))
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def test_a_new_release_goes_green_beside_blue_and_takes_the_service_once_ready(
        namespace: str, local_clusters: LocalClusters) -> None:
    blue_before = coordinator(local_clusters, namespace)["deployments"]["trading-coordinator-blue"]
    deploy(namespace, RELEASE_C)
    state = coordinator(local_clusters, namespace)
    assert {name: item["release"] for name, item in state["deployments"].items()} == {
        "trading-coordinator-blue": RELEASE_B, "trading-coordinator-green": RELEASE_C}
    assert state["deployments"]["trading-coordinator-blue"]["revision"] == blue_before["revision"]  # blue untouched
    assert state["services"] == {"trading-coordinator": "green", "trading-coordinator-preview": "green"}
    assert state["record"] == {"active": "green", "releases": {"blue": RELEASE_B, "green": RELEASE_C}}


def test_a_rollback_switches_back_to_blue_without_a_rollout(namespace: str, local_clusters: LocalClusters) -> None:
    before = coordinator(local_clusters, namespace)["deployments"]
    result = run_playbook("rollback.yml", limit="local-primary",
                          extra_vars=platform_vars(namespace, sapphire_release=RELEASE_C, rollback_validate=False))
    assert result.rc == 0, result.explain()
    state = coordinator(local_clusters, namespace)
    assert state["deployments"] == before  # same releases and revisions: no pod was replaced
    assert state["services"]["trading-coordinator"] == "blue"
    assert state["record"] == {"active": "blue", "releases": {"blue": RELEASE_B, "green": RELEASE_C}}
    # Recording a release alone (--tags release: the pointer moves, nothing is applied) plans the colors it records:
    # blue still serves.
    recorded = run_playbook("deploy.yml", limit="local-primary", tags="release",
                            extra_vars=platform_vars(namespace, sapphire_release=RELEASE_C))
    assert recorded.rc == 0, recorded.explain()
    assert coordinator(local_clusters, namespace)["record"] == state["record"]


def test_a_dr_fence_stops_both_colors_and_a_restore_brings_both_back(namespace: str,
                                                                   local_clusters: LocalClusters) -> None:
    before = {name: item["replicas"] for name, item in coordinator(local_clusters, namespace)["deployments"].items()}
    assert len(before) == 2 and all(count and count > 0 for count in before.values()), before
    for action, expected in (("fence", dict.fromkeys(before, 0)), ("restore", before)):
        result = run_playbook("tests/integration/playbooks/dr_coordinator.yml", limit="local-primary",
                              extra_vars={"sapphire_namespace": namespace, "dr_coordinator_action": action})
        assert result.rc == 0, result.explain()
        assert {name: item["replicas"] for name, item in
                coordinator(local_clusters, namespace)["deployments"].items()} == expected, action


def test_turning_blue_green_off_brings_the_single_deployment_back_and_drops_the_record(
        namespace: str, local_clusters: LocalClusters) -> None:
    deploy(namespace, RELEASE_C, agents_coordinator_blue_green=False)
    state = coordinator(local_clusters, namespace)
    # The colors are left for the operator to delete once the single Deployment serves (README: not automated).
    assert state["deployments"]["trading-coordinator"]["release"] == RELEASE_C
    assert state["services"]["trading-coordinator"] is None and "trading-coordinator-preview" in state["services"]
    assert state["record"] == {}
