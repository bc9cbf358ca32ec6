"""The trading-aware gate in the playbooks, on the local-primary cluster.

A release (deploy.yml with a new sapphire_release), a deleting cleanup and a resume after an emergency stop are refused
inside the market hours before anything is written; an override with a reason lets the release through and the reason
is in the platform state's history; a re-deploy of the running release and a resume with nothing halted are not gated.
The valuation of the open positions against real stores is test_modules_servers.py's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER = "local-primary"
RELEASE_A, RELEASE_B = "2026.11.0", "2026.12.1"
AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 1}]


def open_market() -> list[dict[str, Any]]:
    """A window around now, every day (it runs overnight when it crosses midnight UTC)."""
    now = datetime.now(UTC)
    return [{"start": (now - timedelta(hours=1)).strftime("%H:%M"), "end": (now + timedelta(hours=1)).strftime("%H:%M"),
             "timezone": "UTC"}]


def platform_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    return {"sapphire_namespace": namespace, "workload_enabled": False, "trading_agents": AGENTS,
            "agents_coordinator_min_replicas": 1, "sapphire_release": RELEASE_A, **extra}


def pointer(clusters: LocalClusters, namespace: str) -> dict[str, str]:
    return json.loads(clusters.kubectl(CLUSTER, "-n", namespace, "get", "configmap", "sapphire-releases", "-o",
                                       "json").stdout)["data"]


def history(clusters: LocalClusters) -> list[dict[str, Any]]:
    got = clusters.kubectl(CLUSTER, "-n", "sapphire-system", "get", "configmap", "sapphire-state", "-o", "json")
    return json.loads(json.loads(got.stdout)["data"]["state.json"])["history"]


def said(result: Any) -> str:
    return " ".join((result.stdout + result.stderr).split())


@pytest.fixture(scope="module")
def platform(local_clusters: LocalClusters) -> Iterator[str]:
    namespace = f"it-gate-{uuid.uuid4().hex[:6]}"
    # The first deploy is no release: nothing runs yet, so it is not gated even inside the market hours.
    first = run_playbook("deploy.yml", limit=CLUSTER,
                         extra_vars=platform_vars(namespace, agents_gate_market_hours=open_market()))
    assert first.rc == 0, first.explain()
    yield namespace
    local_clusters.kubectl(CLUSTER, "delete", "namespace", namespace, "--wait=false", check=False)


def test_a_release_inside_the_market_hours_is_refused_before_anything_is_written(
        platform: str, local_clusters: LocalClusters) -> None:
    result = run_playbook("deploy.yml", limit=CLUSTER, json_output=False, extra_vars=platform_vars(
        platform, sapphire_release=RELEASE_B, agents_gate_market_hours=open_market()))
    output = said(result)
    assert result.rc != 0
    assert f"Refused: release {RELEASE_B} (deploy.yml; running {RELEASE_A}): refused because" in output, output[-3000:]
    assert "it is inside the market hours" in output and "agents_gate_override_reason" in output, output[-3000:]
    assert "PLAY [Ensure the Kubernetes clusters]" not in output
    assert pointer(local_clusters, platform)["current"] == RELEASE_A


def test_the_running_release_is_not_gated(platform: str) -> None:
    result = run_playbook("deploy.yml", limit=CLUSTER,
                          extra_vars=platform_vars(platform, agents_gate_market_hours=open_market()))
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()


def test_an_override_with_a_reason_lets_the_release_through_and_is_recorded(
        platform: str, local_clusters: LocalClusters) -> None:
    reason = f"hotfix INC-{uuid.uuid4().hex[:6]}"
    result = run_playbook("deploy.yml", limit=CLUSTER, extra_vars=platform_vars(
        platform, sapphire_release=RELEASE_B, agents_gate_market_hours=open_market(),
        agents_gate_override_reason=reason))
    assert result.rc == 0, result.explain()
    assert pointer(local_clusters, platform)["current"] == RELEASE_B
    (entry,) = [item for item in history(local_clusters) if item.get("reason") == reason]
    assert entry["operation"] == "gate-override" and entry["gated"].startswith(f"release {RELEASE_B}"), entry
    assert any("inside the market hours" in refusal for refusal in entry["refusals"]), entry


def test_a_deleting_cleanup_inside_the_market_hours_is_refused(platform: str) -> None:
    result = run_playbook("cleanup.yml", limit=CLUSTER, json_output=False, extra_vars=platform_vars(
        platform, cleanup_dry_run=False, confirm="local", agents_gate_market_hours=open_market()))
    assert result.rc != 0
    assert "Refused: cleanup.yml deleting (cleanup_scope stale): refused because" in said(result)
    assert "PLAY [Clean up each cluster]" not in said(result)


def test_a_resume_is_gated_only_when_something_is_halted(platform: str, local_clusters: LocalClusters) -> None:
    # agents_halt_set_flag false: this namespace's halt is its record alone (no Redis flag to remove).
    quiet = run_playbook("resume.yml", limit=CLUSTER, extra_vars=platform_vars(
        platform, resume_validate=False, agents_halt_set_flag=False, agents_gate_market_hours=open_market()))
    assert quiet.rc == 0, quiet.explain()

    local_clusters.kubectl(CLUSTER, "-n", platform, "create", "configmap", "sapphire-emergency-stop",
                           "--from-literal=reason=gate test")
    try:
        halted = run_playbook("resume.yml", limit=CLUSTER, json_output=False, extra_vars=platform_vars(
            platform, resume_validate=False, agents_halt_set_flag=False, agents_gate_market_hours=open_market()))
        assert halted.rc != 0
        assert "Refused: resume.yml (trading again after an emergency stop): refused because" in said(halted)
        assert local_clusters.kubectl(CLUSTER, "-n", platform, "get", "configmap", "sapphire-emergency-stop",
                                      check=False).returncode == 0, "the halt record must still be there"
    finally:
        local_clusters.kubectl(CLUSTER, "-n", platform, "delete", "configmap", "sapphire-emergency-stop",
                               check=False)
