"""deploy.yml -e deploy_strategy=canary on the local default: a bad release is aborted by its analysis, a good one
promoted tier by tier; then the coordinator is released blue-green (agents_coordinator_blue_green), its new color
analysed before the Service moves to it.

The whole local default runs (its Redis, PostgreSQL, Prometheus scraping the synthetic workload) with the platform in a
throw-away namespace. Release 2026.12.1 told to misbehave (errors, silent heartbeats, slow decisions:
workload_misbehave) is aborted on its first tier, lightweight: the canaries are removed, every agent still runs
2026.11.0 and the outcome is in the release history. The same release behaving is promoted tier by tier (lightweight,
standard, heavy, then the accelerated tier, whose canary takes a stable replica's TPUs) and becomes the current
release. Release 2026.12.2 with blue-green turned on: a coordinator erring and slow is not switched to (its color is
removed, the Service keeps the coordinator from before, the agents stay at 2026.12.1), a behaving one is (the
Service selects blue, the single Deployment is gone). An inconclusive switch pauses, whatever agents_canary_decision
says, until agents_coordinator_decision answers it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sapphire_testlib import LocalClusters, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER = "local-primary"
STABLE, NEW = "2026.11.0", "2026.12.1"
REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "roles" / "agents" / "defaults" / "main.yml").read_text())["agents_canary_analysis"]
# The shipped queries and conditions, measured sooner: rates over 30 s (two of the local Prometheus' 15 s scrapes), the
# first measurement after 35 s (past the window: the aborted canary's samples are out of it).
ANALYSIS = {**SHIPPED, "interval": 5, "count": 2, "window": "30s", "initial_delay": 35}
COORDINATOR_ANALYSIS = {
    **yaml.safe_load((REPO / "roles" / "agents" / "defaults" / "main.yml").read_text())["agents_coordinator_analysis"],
    "interval": 5, "count": 2, "window": "30s", "initial_delay": 35}
BLUE_GREEN = "2026.12.2"
# No losses: the local default's trades are shared with the rest of the suite, whose loss limits must hold (the
# analysis of losses is test_release_analysis.py's, on servers of its own).
BAD = {"release": NEW, "error_rate": 0.5, "stale_heartbeats": True, "latency_seconds": 2}


def deploy(namespace: str, limit: str | None = CLUSTER, **extra: Any) -> Any:
    """deploy.yml on the primary region alone (limit): the servers and the DR cluster are not what a release changes."""
    return run_playbook("deploy.yml", json_output=False, timeout=2400, limit=limit,
                        extra_vars={"sapphire_namespace": namespace, "agents_coordinator_min_replicas": 1, **extra})


def kube(clusters: LocalClusters, namespace: str, *args: str) -> dict[str, Any]:
    return json.loads(clusters.kubectl(CLUSTER, "-n", namespace, *args, "-o", "json").stdout)


def agent_releases(clusters: LocalClusters, namespace: str) -> dict[str, str]:
    items = kube(clusters, namespace, "get", "deployments", "-l", "app.kubernetes.io/component=agent")["items"]
    return {item["metadata"]["name"]: item["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
            for item in items}


def outcomes(clusters: LocalClusters, namespace: str) -> list[dict[str, Any]]:
    data = kube(clusters, namespace, "get", "configmap", "sapphire-releases")["data"]
    return json.loads(data.get("canary", "[]"))


@pytest.fixture(scope="module")
def platform(local_clusters: LocalClusters) -> Iterator[str]:
    namespace = f"it-canary-{uuid.uuid4().hex[:6]}"
    # The whole platform first: the module may be the suite's first to need the servers (Redis, PostgreSQL, Prometheus).
    first = deploy(namespace, limit=None, sapphire_release=STABLE)
    assert first.rc == 0, first.explain()
    yield namespace
    local_clusters.kubectl("local-dr", "delete", "namespace", namespace, "--wait=false", check=False)
    # Waited for on local-primary: its accelerated agent holds TPUs the next module (test_capacity) counts as free.
    local_clusters.kubectl(CLUSTER, "delete", "namespace", namespace, "--wait=true", "--timeout=180s", check=False)


def test_a_misbehaving_release_is_aborted_on_its_first_tier(platform: str, local_clusters: LocalClusters) -> None:
    before = agent_releases(local_clusters, platform)
    result = deploy(platform, sapphire_release=NEW, deploy_strategy="canary", agents_canary_analysis=ANALYSIS,
                    workload_misbehave=BAD)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.rc != 0
    assert "Canary of tier lightweight aborted: Failed:" in said, said[-4000:]
    assert agent_releases(local_clusters, platform) == before == {name: STABLE for name in before}
    pointer = kube(local_clusters, platform, "get", "configmap", "sapphire-releases")["data"]
    assert pointer["current"] == STABLE
    last = outcomes(local_clusters, platform)[-1]
    assert (last["release"], last["tier"], last["outcome"]) == (NEW, "lightweight", "aborted"), last


def canaries(clusters: LocalClusters, namespace: str) -> list[str]:
    return sorted(name for name in agent_releases(clusters, namespace) if name.endswith("-canary"))


def test_an_inconclusive_analysis_pauses_and_the_operators_decision_answers_it(
        platform: str, local_clusters: LocalClusters) -> None:
    # A measurement between the success and the failure condition: inconclusive.
    undecided = {"interval": 1, "count": 1, "window": "30s", "initial_delay": 0, "metrics": [
        {"name": "undecided", "query": "vector(0.5)", "success_condition": "< 0.1", "failure_condition": "> 0.9"}]}
    paused = deploy(platform, sapphire_release=NEW, deploy_strategy="canary", agents_canary_analysis=undecided)
    assert paused.rc != 0
    assert "Canary of tier lightweight paused, the analysis is inconclusive" in " ".join(paused.stdout.split())
    assert canaries(local_clusters, platform) == ["agent-breakout-canary"], "a paused canary keeps running"
    assert outcomes(local_clusters, platform)[-1]["outcome"] == "paused"

    answered = deploy(platform, sapphire_release=NEW, deploy_strategy="canary", agents_canary_analysis=undecided,
                      agents_canary_decision="abort")
    said = " ".join(answered.stdout.split())
    assert answered.rc != 0 and "Canary of tier lightweight aborted: decided by agents_canary_decision=abort" in said
    assert canaries(local_clusters, platform) == []
    assert set(agent_releases(local_clusters, platform).values()) == {STABLE}
    assert outcomes(local_clusters, platform)[-1]["outcome"] == "aborted"


def test_a_good_release_is_promoted_tier_by_tier(platform: str, local_clusters: LocalClusters) -> None:
    result = deploy(platform, sapphire_release=NEW, deploy_strategy="canary", agents_canary_analysis=ANALYSIS)
    assert result.rc == 0, (result.stdout + result.stderr)[-6000:]
    releases = agent_releases(local_clusters, platform)
    assert releases and set(releases.values()) == {NEW}, releases
    assert not [name for name in releases if name.endswith("-canary")]
    assert kube(local_clusters, platform, "get", "configmap", "sapphire-releases")["data"]["current"] == NEW
    promoted = [(item["tier"], item["outcome"]) for item in outcomes(local_clusters, platform)][-4:]
    assert promoted == [("lightweight", "promoted"), ("standard", "promoted"), ("heavy", "promoted"),
                        ("accelerated", "promoted")], promoted

    # The release now runs: the same deploy again is no release, finds everything in place and changes nothing.
    again = run_playbook("deploy.yml", timeout=2400, limit=CLUSTER, extra_vars={
        "sapphire_namespace": platform, "agents_coordinator_min_replicas": 1, "sapphire_release": NEW,
        "deploy_strategy": "canary", "agents_canary_analysis": ANALYSIS})
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def coordinator(clusters: LocalClusters, namespace: str) -> tuple[dict[str, str], str | None]:
    """The coordinator Deployments (name: release) and the color the Service selects (None: no color)."""
    items = kube(clusters, namespace, "get", "deployments", "-l", "app.kubernetes.io/component=coordinator")["items"]
    service = kube(clusters, namespace, "get", "service", "trading-coordinator")
    return ({item["metadata"]["name"]: item["metadata"]["labels"]["app.kubernetes.io/version"] for item in items},
            service["spec"]["selector"].get("sapphire.io/color"))


def test_a_misbehaving_coordinator_is_not_switched_to(platform: str, local_clusters: LocalClusters) -> None:
    before = coordinator(local_clusters, platform)
    assert before == ({"trading-coordinator": NEW}, None)
    result = deploy(platform, sapphire_release=BLUE_GREEN, agents_coordinator_blue_green=True,
                    agents_coordinator_analysis=COORDINATOR_ANALYSIS,
                    workload_misbehave={"release": BLUE_GREEN, "error_rate": 0.5, "latency_seconds": 2})
    said = " ".join((result.stdout + result.stderr).split())
    assert result.rc != 0
    assert f"The coordinator of release {BLUE_GREEN} was aborted: Failed:" in said, said[-4000:]
    assert coordinator(local_clusters, platform) == before, "the new color is removed, the Service did not move"
    assert set(agent_releases(local_clusters, platform).values()) == {NEW}, "the agents were not touched"
    assert kube(local_clusters, platform, "get", "configmap", "sapphire-releases")["data"]["current"] == NEW
    last = outcomes(local_clusters, platform)[-1]
    assert (last["release"], last["tier"], last["outcome"]) == (BLUE_GREEN, "coordinator", "aborted"), last


def test_a_behaving_coordinator_is_switched_to_once_analysed(platform: str, local_clusters: LocalClusters) -> None:
    result = deploy(platform, sapphire_release=BLUE_GREEN, agents_coordinator_blue_green=True,
                    agents_coordinator_analysis=COORDINATOR_ANALYSIS)
    assert result.rc == 0, (result.stdout + result.stderr)[-6000:]
    assert coordinator(local_clusters, platform) == ({"trading-coordinator-blue": BLUE_GREEN}, "blue")
    last = outcomes(local_clusters, platform)[-1]
    assert (last["release"], last["tier"], last["outcome"]) == (BLUE_GREEN, "coordinator", "switched"), last
    assert last["detail"].startswith("Successful"), last
    pointer = kube(local_clusters, platform, "get", "configmap", "sapphire-releases")["data"]
    assert (pointer["current"], json.loads(pointer["coordinator"])) == (
        BLUE_GREEN, {"active": "blue", "releases": {"blue": BLUE_GREEN}})


def test_an_inconclusive_switch_pauses_and_only_the_coordinators_decision_answers_it(
        platform: str, local_clusters: LocalClusters) -> None:
    undecided = {"interval": 1, "count": 1, "window": "30s", "initial_delay": 0, "metrics": [
        {"name": "undecided", "query": "vector(0.5)", "success_condition": "< 0.1", "failure_condition": "> 0.9"}]}
    paused_release = "2026.12.3"
    # An answer meant for a paused canary tier must not skip the coordinator's analysis.
    paused = deploy(platform, sapphire_release=paused_release, agents_coordinator_blue_green=True,
                    agents_coordinator_analysis=undecided, agents_canary_decision="promote")
    said = " ".join((paused.stdout + paused.stderr).split())
    assert paused.rc != 0
    assert f"The analysis of the coordinator of release {paused_release} is inconclusive" in said, said[-4000:]
    assert coordinator(local_clusters, platform) == (
        {"trading-coordinator-blue": BLUE_GREEN, "trading-coordinator-green": paused_release}, "blue")
    assert set(agent_releases(local_clusters, platform).values()) == {BLUE_GREEN}
    assert outcomes(local_clusters, platform)[-1]["outcome"] == "paused"

    answered = deploy(platform, sapphire_release=paused_release, agents_coordinator_blue_green=True,
                      agents_coordinator_analysis=undecided, agents_coordinator_decision="abort")
    said = " ".join((answered.stdout + answered.stderr).split())
    assert answered.rc != 0
    assert "aborted: decided by agents_coordinator_decision=abort" in said, said[-4000:]
    assert coordinator(local_clusters, platform) == ({"trading-coordinator-blue": BLUE_GREEN}, "blue")
    assert outcomes(local_clusters, platform)[-1]["outcome"] == "aborted"
