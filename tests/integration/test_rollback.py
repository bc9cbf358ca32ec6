"""rollback.yml on the local-primary cluster: back to the images of the previous release.

Release A then release B are deployed into a throw-away namespace; rollback (no rollback_to) must
return every trading workload to A's images, record A as current, and a rollback to a release that
was never deployed must fail naming the releases that were.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RELEASE_A, RELEASE_B = "2026.11.0", "2026.12.1"
AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 1},
          {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1}]


def platform_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    # Not a test of the trading-aware gate (test_trading_gate.py): the throw-away namespace trades nothing.
    return {"sapphire_namespace": namespace, "workload_enabled": False, "agents_gate_enabled": False,
            "trading_agents": AGENTS,
            "coordinator_min_replicas": 1, "agents_coordinator_min_replicas": 1, **extra}


def images(clusters: LocalClusters, namespace: str) -> dict[str, set[str]]:
    items = json.loads(clusters.kubectl("local-primary", "-n", namespace, "get", "deployments", "-o",
                                        "json").stdout)["items"]
    return {d["metadata"]["name"]: {c["image"].rsplit(":", 1)[-1] for c in d["spec"]["template"]["spec"]["containers"]}
            for d in items}


@pytest.fixture(scope="module")
def platform(local_clusters: LocalClusters) -> Iterator[str]:
    namespace = f"it-rollback-{uuid.uuid4().hex[:6]}"
    for release in (RELEASE_A, RELEASE_B):
        result = run_playbook("deploy.yml", limit="local-primary",
                              extra_vars=platform_vars(namespace, sapphire_release=release))
        assert result.rc == 0, result.explain()
    yield namespace
    local_clusters.kubectl("local-primary", "delete", "namespace", namespace, "--wait=false", check=False)


def test_rollback_returns_every_workload_to_the_previous_release(platform: str, local_clusters: LocalClusters) -> None:
    on_b = images(local_clusters, platform)
    assert set(on_b) == {"trading-coordinator", "agent-momentum", "agent-breakout"}
    assert all(tags == {RELEASE_B} for tags in on_b.values()), on_b

    result = run_playbook("rollback.yml", limit="local-primary",
                          extra_vars=platform_vars(platform, sapphire_release=RELEASE_B,
                                                   validate_components=["namespace"]))
    assert result.rc == 0, result.explain()
    on_a = images(local_clusters, platform)
    assert on_a.keys() == on_b.keys()
    assert all(tags == {RELEASE_A} for tags in on_a.values()), on_a
    pointer = json.loads(local_clusters.kubectl("local-primary", "-n", platform, "get", "configmap",
                                                "sapphire-releases", "-o", "json").stdout)["data"]
    assert (pointer["current"], pointer["previous"]) == (RELEASE_A, RELEASE_B)

    again = run_playbook("rollback.yml", limit="local-primary",
                         extra_vars=platform_vars(platform, rollback_to=RELEASE_A, rollback_validate=False))
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def test_rollback_to_an_unknown_release_names_the_recorded_ones(platform: str, local_clusters: LocalClusters) -> None:
    before = images(local_clusters, platform)
    result = run_playbook("rollback.yml", limit="local-primary",
                          extra_vars=platform_vars(platform, rollback_to="1999.1.0", rollback_validate=False))
    assert result.rc != 0
    message = "\n".join(result.failure_messages())
    assert "1999.1.0" in message and RELEASE_A in message and RELEASE_B in message, message
    assert images(local_clusters, platform) == before
