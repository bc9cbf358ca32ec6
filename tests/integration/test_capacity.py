"""deploy.yml on local-primary counts what is free, not what the nodes have in all (issue 10, item 4).

local-primary has 2 TPU nodes with google.com/tpu: 4 each (tainted). A pod of another throw-away
namespace holds 4 of the 8. An ensemble needing 8 used to pass the preflight ("8 of 8 needed"),
write its namespace and fail after the 300 s wait; now it is refused in the preflight, the message
says needed, free and who holds the rest, and nothing is written. An ensemble needing what is
still free deploys. When the preflight is told not to insist (accelerated_require_capacity: false),
the final wait stops on the pod the scheduler cannot place and names it, instead of waiting out
deploy_wait_timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, PlaybookResult, kube_binary, run_playbook, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER = "local-primary"
TPU = "google.com/tpu"
TPU_CHECK = "Check the accelerated tiers' pools have free what their agents request"
WAIT_REPORT = "Report the workloads that did not become available"


def tpu_agents(count: int) -> list[dict[str, Any]]:
    return [{"name": f"tpu-{index}", "strategy": "scalping", "tier": "accelerated", "replicas": 1}
            for index in range(count)]


def deploy(namespace: str, trading_agents: list[dict[str, Any]], **extra: Any) -> PlaybookResult:
    # deploy_wait_timeout keeps a regression (the old preflight let this through) from waiting 300 s.
    return run_playbook("deploy.yml", limit=CLUSTER,
                        extra_vars={"sapphire_namespace": namespace, "workload_enabled": False,
                                    "trading_agents": trading_agents, "agents_coordinator_min_replicas": 1,
                                    "deploy_wait_timeout": 60, **extra})


def kubectl_json(clusters: LocalClusters, *args: str) -> dict[str, Any]:
    return json.loads(clusters.kubectl(CLUSTER, *args, "-o", "json").stdout)


def namespace_exists(clusters: LocalClusters, name: str) -> bool:
    return clusters.kubectl(CLUSTER, "get", "namespace", name, check=False).returncode == 0


def delete_namespace(clusters: LocalClusters, name: str) -> None:
    """Delete and wait until it is gone, so its TPU pods do not hold devices other tests count on."""
    clusters.kubectl(CLUSTER, "delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    wait_for(lambda: not namespace_exists(clusters, name), 120, f"namespace {name} deleted", interval=1)


def tpu_free_per_node(clusters: LocalClusters) -> dict[str, int]:
    """Free devices per TPU node, counted here from the API (not with the code under test)."""
    nodes = kubectl_json(clusters, "get", "nodes", "-l", "sapphire.io/pool=tpu")["items"]
    pods = kubectl_json(clusters, "get", "pods", "--all-namespaces")["items"]
    free = {node["metadata"]["name"]: int(node["status"]["allocatable"].get(TPU, 0)) for node in nodes}
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if node in free and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for container in pod["spec"]["containers"]:
                resources = container.get("resources") or {}
                free[node] -= int((resources.get("requests") or resources.get("limits") or {}).get(TPU, 0))
    return free


def tpu_holders(clusters: LocalClusters) -> list[str]:
    pods = kubectl_json(clusters, "get", "pods", "--all-namespaces")["items"]
    return [f"{pod['metadata']['namespace']}/{pod['metadata']['name']} on {pod['spec'].get('nodeName')}"
            for pod in pods if any(TPU in ((c.get("resources") or {}).get("requests") or {})
                                   for c in pod["spec"]["containers"])]


def create(clusters: LocalClusters, manifest: dict[str, Any]) -> None:
    created = subprocess.run([str(kube_binary("kubectl")), "--kubeconfig", str(clusters.kubeconfigs[CLUSTER]),
                              "create", "-f", "-"], input=json.dumps(manifest), capture_output=True, text=True,
                             timeout=60)
    assert created.returncode == 0, created.stderr


def holder_pod(namespace: str, priority_class: str) -> dict[str, Any]:
    resources = {"cpu": "10m", "memory": "16Mi", TPU: "4"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tpu-holder", "namespace": namespace},
            "spec": {"nodeSelector": {"sapphire.io/pool": "tpu"}, "priorityClassName": priority_class,
                     "tolerations": [{"key": TPU, "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
                     "containers": [{"name": "hold", "image": "registry.example/research/notebook:1.0",
                                     "resources": {"requests": resources, "limits": resources}}]}}


@pytest.fixture(scope="module")
def holder(local_clusters: LocalClusters) -> Iterator[str]:
    """Another namespace whose pod holds 4 google.com/tpu on local-primary.

    Its priority is above the accelerated tier's (sapphire-accelerated), so the scheduler cannot preempt it to
    make room for the platform's agents: the devices stay held, as another team's would.
    """
    namespace = f"it-cap-hold-{uuid.uuid4().hex[:6]}"
    priority_class = namespace
    create(local_clusters, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                            "metadata": {"name": priority_class}, "value": 2000000, "preemptionPolicy": "Never",
                            "description": "test_capacity: a TPU holder the platform's agents cannot preempt"})
    local_clusters.kubectl(CLUSTER, "create", "namespace", namespace)
    try:
        create(local_clusters, holder_pod(namespace, priority_class))

        def bound() -> bool:
            return bool(kubectl_json(local_clusters, "-n", namespace, "get", "pod", "tpu-holder")["spec"]
                        .get("nodeName"))

        try:
            wait_for(bound, 90, "the TPU holder pod to be scheduled", interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the TPU of {CLUSTER} is held by: {tpu_holders(local_clusters)}") from exc
        yield namespace
    finally:
        delete_namespace(local_clusters, namespace)
        local_clusters.kubectl(CLUSTER, "delete", "priorityclass", priority_class, "--ignore-not-found", check=False)


@pytest.fixture
def target(local_clusters: LocalClusters) -> Iterator[str]:
    """The namespace a test deploys into; removed afterwards whatever happened."""
    namespace = f"it-cap-{uuid.uuid4().hex[:6]}"
    yield namespace
    delete_namespace(local_clusters, namespace)


def test_an_ensemble_needing_more_tpu_than_is_free_is_refused_before_anything_is_written(
        local_clusters: LocalClusters, holder: str, target: str) -> None:
    result = deploy(target, tpu_agents(2))  # 2 agents x 4 devices

    assert result.rc != 0, "the deploy of 8 google.com/tpu passed although another namespace holds 4 of the 8"
    message = " ".join("\n".join(result.failure_messages()).split())
    found = re.search(r"SHORT google\.com/tpu on pool tpu \(tier accelerated\): needed 8, free (\d+) "
                      r"\(allocatable 8; held by ([^)]*)\)", message)
    assert found, result.explain()
    assert int(found.group(1)) <= 4
    assert f"{holder} 4" in found.group(2), found.group(0)
    assert "Tier 'accelerated' needs 8 google.com/tpu (tpu-0, tpu-1)" in message
    assert "trading_agents" in message and "cluster_node_pools" in message  # what to change
    played = [play["play"]["name"] for play in result.plays]
    assert played[-1].startswith("Preflight"), played  # refused in the preflight, no later play started
    assert not namespace_exists(local_clusters, target), "the refused deploy wrote its namespace"


def test_an_ensemble_needing_what_is_free_deploys(local_clusters: LocalClusters, holder: str, target: str) -> None:
    whole_pods = sum(free // 4 for free in tpu_free_per_node(local_clusters).values())
    if whole_pods < 1:
        pytest.skip(f"no TPU node of {CLUSTER} has 4 devices free beside the holder: {tpu_holders(local_clusters)}")
    ensemble = [*tpu_agents(1), {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1}]

    result = deploy(target, ensemble)

    assert result.rc == 0, result.explain()
    shown = result.task_results(f"accelerated : {TPU_CHECK}") or result.task_results(TPU_CHECK)
    table = " ".join(next(iter(shown.values()))["msg"].split())
    assert re.search(r"ok google\.com/tpu on pool tpu \(tier accelerated\): needed 4, free \d+ "
                     rf"\(allocatable 8; held by [^)]*{re.escape(holder)} 4", table), table
    pods = kubectl_json(local_clusters, "-n", target, "get", "pods", "-l", "sapphire.io/agent=tpu-0")["items"]
    assert [pod["status"]["phase"] for pod in pods] == ["Running"]


def test_the_final_wait_stops_on_a_pod_the_scheduler_cannot_place_and_names_it(
        local_clusters: LocalClusters, holder: str, target: str) -> None:
    # The preflight only warns (accelerated_require_capacity: false), so the deploy writes 8 devices' worth of
    # agents where at most 4 are free; one of them at least stays Pending with "Insufficient google.com/tpu".
    result = deploy(target, tpu_agents(2), accelerated_require_capacity=False, deploy_unschedulable_after=5,
                    deploy_wait_timeout=120)

    assert result.rc != 0
    reports = result.task_results(WAIT_REPORT)
    assert reports, result.explain()
    message = " ".join(reports[CLUSTER]["msg"].split())
    assert message.startswith(f"Stopped waiting on {CLUSTER}, waiting cannot fix: pod agent-tpu-"), message
    assert re.search(r"pod agent-tpu-[01]-\S+ cannot be scheduled \(for \d+ s\): 0/\d+ nodes are available: .*"
                     r"Insufficient google\.com/tpu", message), message
