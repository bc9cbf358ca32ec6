"""filter_plugins/sapphire.py: the deploy preflight compares the ensemble with what the nodes have FREE.

Issue 10, item 4: a second ensemble needing 8 google.com/tpu on a cluster where another namespace
already held 4 of the 8 passed the preflight ("8 of 8 needed") and failed after a 300 s wait. Free
is allocatable minus what pods of other namespaces request, per node pool the tiers target and in
total; the platform's own pods in the namespace being deployed are replaced by the deploy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
filters = load_module("sapphire", "filter_plugins")

NAMESPACE = "trading-system"
TIERS: dict[str, Any] = yaml.safe_load((REPO_ROOT / "inventories" / "common" / "agent_tiers.yml").read_text())[
    "agent_tiers"]
POOLS: list[dict[str, Any]] = yaml.safe_load((REPO_ROOT / "roles" / "cluster" / "defaults" / "main.yml").read_text())[
    "cluster_node_pools"]
# The local default: 3 general (8 cpu), 1 heavy (16 cpu), 2 TPU nodes (24 cpu, google.com/tpu: 4, tainted).
NODES = filters.pool_nodes(POOLS, "local-primary")
TPU_TOLERATION = [{"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
TPU_SELECTOR = {"sapphire.io/pool": "tpu"}


def pod(name: str, namespace: str, node: str | None, requests: dict[str, str], phase: str = "Running",
        labels: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": requests}
    if limits is not None:
        resources["limits"] = limits
    spec: dict[str, Any] = {"containers": [{"name": "main", "resources": resources}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec,
            "status": {"phase": phase}}


def tpu_holder(namespace: str = "research", node: str = "local-primary-tpu-0", count: str = "4",
               **extra: Any) -> dict[str, Any]:
    return pod(f"holder-{node}", namespace, node, {"cpu": "1", "memory": "1Gi", "google.com/tpu": count}, **extra)


def platform_pod(agent: str | None, namespace: str = NAMESPACE, node: str = "local-primary-tpu-1",
                 requests: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "sapphire-ops", "app.kubernetes.io/part-of": "sapphire"}
    if agent:
        labels["sapphire.io/agent"] = agent
    return pod(f"agent-{agent or 'coordinator'}-x", namespace, node,
               requests or {"cpu": "1500m", "memory": "2Gi", "google.com/tpu": "4"}, labels=labels)


def agents(accelerated: int = 0, standard: int = 0, heavy: int = 0) -> list[dict[str, Any]]:
    ensemble = []
    for tier, count in (("accelerated", accelerated), ("standard", standard), ("heavy", heavy)):
        ensemble += [{"name": f"{tier}-{index}", "strategy": "momentum", "tier": tier, "replicas": 1}
                     for index in range(count)]
    return ensemble


def rows_for(pods: list[dict[str, Any]], ensemble: list[dict[str, Any]], nodes: list[dict[str, Any]] | None = None,
             workloads: list[dict[str, Any]] | None = None, scale_to_zero: bool = False) -> list[dict[str, Any]]:
    free = filters.free_capacity(NODES if nodes is None else nodes, pods, NAMESPACE, TIERS, ensemble)
    return filters.capacity_rows(free, ensemble, TIERS, workloads, scale_to_zero)


def row(rows: list[dict[str, Any]], resource: str, pool: str) -> dict[str, Any]:
    found = [item for item in rows if item["resource"] == resource and item["pool"] == pool]
    assert len(found) == 1, rows
    return found[0]


# ---------------------------------------------------------------- what a pod holds
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                         {"resources": {"requests": {"cpu": "250m"}}}]},
         {"cpu": 0.5, "memory": 64 * 2**20, "pods": 1}),
        # an init container larger than the containers sets the request
        ({"initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
          "containers": [{"resources": {"requests": {"cpu": "500m"}}}]},
         {"cpu": 2, "pods": 1}),
        # a sidecar (restartPolicy Always) runs beside the containers and adds up
        ({"initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
          "containers": [{"resources": {"requests": {"cpu": "500m"}}}]},
         {"cpu": 0.6, "pods": 1}),
        # a limit without a request requests the limit (the API server's defaulting); overhead adds
        ({"containers": [{"resources": {"limits": {"google.com/tpu": "4", "cpu": "1"}}}], "overhead": {"cpu": "50m"}},
         {"google.com/tpu": 4, "cpu": 1.05, "pods": 1}),
        ({"containers": [{}]}, {"pods": 1}),
    ],
)
def test_pod_requests_count_as_the_scheduler_counts(spec: dict[str, Any], expected: dict[str, float]) -> None:
    held = filters.pod_requests({"spec": spec})
    assert {key: float(value) for key, value in held.items()} == pytest.approx(expected)


# ---------------------------------------------------------------- which nodes a tier can use
@pytest.mark.parametrize(
    ("node_name", "selector", "tolerations", "fits"),
    [
        ("local-primary-tpu-0", TIERS["accelerated"]["node_selector"], TPU_TOLERATION, True),
        ("local-primary-tpu-0", TIERS["accelerated"]["node_selector"], [], False),  # tainted
        ("local-primary-tpu-0", {}, [{"key": "google.com/tpu", "operator": "Exists"}], True),
        ("local-primary-tpu-0", {}, [{"operator": "Exists"}], True),  # tolerates everything
        ("local-primary-tpu-0", {}, [{"key": "google.com/tpu", "value": "absent", "effect": "NoSchedule"}], False),
        ("local-primary-general-0", TIERS["accelerated"]["node_selector"], TPU_TOLERATION, False),
        ("local-primary-general-0", {"sapphire.io/pool": "general"}, [], True),
        ("local-primary-heavy-0", {"sapphire.io/pool": "general"}, [], False),
    ],
)
def test_node_fits_selector_and_taints(node_name: str, selector: dict[str, str], tolerations: list[dict[str, Any]],
                                       fits: bool) -> None:
    node = next(node for node in NODES if node["metadata"]["name"] == node_name)
    assert filters.node_fits(node, selector, tolerations) is fits


def test_a_cordoned_node_offers_nothing() -> None:
    node = copy.deepcopy(NODES[0])
    node["spec"]["unschedulable"] = True
    assert filters.node_fits(node, {}, []) is False


# ---------------------------------------------------------------- free capacity and who holds it
def test_the_issue_another_namespace_holds_4_of_8_tpu_so_8_needed_is_refused() -> None:
    rows = rows_for([tpu_holder("research")], agents(accelerated=2))
    tpu = row(rows, "google.com/tpu", "tpu")
    assert (tpu["needed"], tpu["allocatable"], tpu["free"], tpu["ok"]) == (8, 8, 4, False)
    assert tpu["holders"] == {"research": 4}
    assert tpu["accelerator"] is True
    line = filters.capacity_table([tpu])
    assert line.splitlines() == [
        "SHORT google.com/tpu on pool tpu (tier accelerated): needed 8, free 4 (allocatable 8; held by research 4)",
        "      Tier 'accelerated' needs 8 google.com/tpu (accelerated-0, accelerated-1)"]
    # The check the preflight made before: the nodes' allocatable, blind to what runs on them.
    assert filters.accelerator_capacity(NODES, TIERS["accelerated"]["node_selector"], "google.com/tpu") == 8


def test_what_is_left_fits() -> None:
    tpu = row(rows_for([tpu_holder("research")], agents(accelerated=1)), "google.com/tpu", "tpu")
    assert (tpu["needed"], tpu["free"], tpu["ok"]) == (4, 4, True)
    assert filters.capacity_table([tpu]).startswith(
        "ok    google.com/tpu on pool tpu (tier accelerated): needed 4, free 4")


@pytest.mark.parametrize(
    ("held", "free", "holders"),
    [
        # the namespace's own platform pods are replaced by the deploy: not subtracted
        ([platform_pod("accelerated-0")], 8, {}),
        # an agent no longer in trading_agents keeps running until cleanup.yml: subtracted
        ([platform_pod("retired")], 4,
         {f"{NAMESPACE} (agent retired, not in trading_agents: cleanup.yml removes it)": 4}),
        # a pod of the namespace that sapphire-ops did not deploy keeps running: subtracted
        ([tpu_holder(NAMESPACE)], 4, {f"{NAMESPACE} (pods not deployed by sapphire-ops)": 4}),
        # the same agent name in another namespace is another ensemble: subtracted
        ([platform_pod("accelerated-0", namespace="trading-b")], 4, {"trading-b": 4}),
        # finished and unscheduled pods hold nothing
        ([tpu_holder(phase="Succeeded"), tpu_holder(node="local-primary-tpu-1", phase="Failed")], 8, {}),
        ([pod("pending", "research", None, {"google.com/tpu": "4"}, phase="Pending")], 8, {}),
        # two namespaces, largest first
        ([tpu_holder("research", count="1"), tpu_holder("backtest", node="local-primary-tpu-1", count="3")], 4,
         {"backtest": 3, "research": 1}),
    ],
)
def test_free_subtracts_what_others_hold(held: list[dict[str, Any]], free: float, holders: dict[str, float]) -> None:
    ensemble = agents(accelerated=1)
    pools = filters.free_capacity(NODES, held, NAMESPACE, TIERS, ensemble)
    tpu_pool = next(pool for pool in pools if pool["tiers"] == ["accelerated"])
    assert tpu_pool["name"] == "tpu"
    assert tpu_pool["resources"]["google.com/tpu"]["free"] == free
    assert tpu_pool["resources"]["google.com/tpu"]["holders"] == holders


def test_devices_split_across_nodes_do_not_fit_a_pod_that_needs_them_on_one() -> None:
    # 2 free on each TPU node: 4 free in all, but a pod of the tier needs its 4 devices on one node.
    held = [tpu_holder("research", count="2"), tpu_holder("backtest", node="local-primary-tpu-1", count="2")]
    tpu = row(rows_for(held, agents(accelerated=1)), "google.com/tpu", "tpu")
    assert (tpu["free"], tpu["usable"], tpu["ok"]) == (4, 0, False)
    assert "free 4, of which whole pods can use 0" in filters.capacity_table([tpu])


def test_cpu_per_pool_counts_only_the_pool_the_tier_selects() -> None:
    # The heavy pool is one node of 16 cpu; another namespace holds 15.5 of it. The general pool is idle.
    held = [pod("etl", "batch", "local-primary-heavy-0", {"cpu": "15500m", "memory": "1Gi"})]
    rows = rows_for(held, agents(heavy=1, standard=2))
    heavy = row(rows, "cpu", "heavy")
    assert (heavy["needed"], heavy["free"], heavy["ok"]) == (0.8, 0.5, False)
    assert heavy["holders"] == {"batch": 15.5}
    assert row(rows, "cpu", "general")["ok"] is True
    assert "SHORT cpu on pool heavy (tier heavy): needed 800m, free 500m (allocatable 16; held by batch 15500m)" \
        in filters.capacity_table(rows)
    # The general pool is shared by two tiers and named once.
    assert row(rows, "pods", "general")["tiers"] == ["lightweight", "standard"]


def test_total_counts_the_coordinator_and_the_data_services_too() -> None:
    coordinator = filters.workload_rows("coordinator", 2, {"requests": {"cpu": "500m", "memory": "512Mi"}})
    small = [filters.pool_nodes([{**POOLS[0], "count": 1, "cpu": "2"}], "small")[0]]
    rows = rows_for([], agents(standard=2), nodes=small, workloads=coordinator)
    total_cpu = row(rows, "cpu", "total")
    assert total_cpu["total"] is True
    assert (total_cpu["needed"], total_cpu["free"], total_cpu["ok"]) == (1.6, 2, True)
    assert row(rows, "pods", "total")["needed"] == 4
    assert "ok    cpu in total: needed 1600m, free 2 (allocatable 2)" in filters.capacity_table(rows)


def test_a_pool_without_nodes_says_so() -> None:
    general_only = [node for node in NODES if "tpu" not in node["metadata"]["name"]]
    tpu = row(rows_for([], agents(accelerated=1), nodes=general_only), "google.com/tpu",
              "cloud.google.com/gke-tpu-accelerator=tpu-v5-lite-podslice,cloud.google.com/gke-tpu-topology=2x2")
    assert (tpu["allocatable"], tpu["free"], tpu["ok"]) == (0, 0, False)
    assert "no schedulable node matches cloud.google.com/gke-tpu-accelerator=tpu-v5-lite-podslice" \
        in filters.capacity_table([tpu])


@pytest.mark.parametrize("scale_to_zero", [True, False])
def test_nothing_needed_means_no_row(scale_to_zero: bool) -> None:
    ensemble = [{"name": "idle", "strategy": "momentum", "tier": "accelerated",
                 "replicas": 1 if scale_to_zero else 0}]
    rows = rows_for([tpu_holder(), tpu_holder(node="local-primary-tpu-1")], ensemble, scale_to_zero=scale_to_zero)
    assert [item for item in rows if item["accelerator"]] == []


def test_the_accelerated_pools_are_marked_for_the_accelerated_preflight() -> None:
    rows = rows_for([], agents(accelerated=1, standard=1))
    marked = {(item["resource"], item["pool"]) for item in rows if item["accelerated_pool"]}
    assert marked == {("cpu", "tpu"), ("memory", "tpu"), ("pods", "tpu"), ("google.com/tpu", "tpu")}
    assert {item["pool"] for item in rows if not item["accelerated_pool"]} == {"general", "total"}


def test_a_pool_of_no_accelerator_nodes_names_the_tier_and_the_device() -> None:
    """What an operator reads when the cluster has no accelerator pool at all (cluster_node_pools without it)."""
    general_only = [node for node in NODES if "tpu" not in node["metadata"]["name"]]
    ensemble = [{"name": "scalping", "strategy": "scalping", "tier": "accelerated", "replicas": 1}]
    rows = [item for item in rows_for([], ensemble, nodes=general_only) if item["accelerated_pool"]]
    assert not any(item["ok"] for item in rows)
    assert "Tier 'accelerated' needs 4 google.com/tpu (scalping)" in filters.capacity_table(rows)


def test_a_short_row_names_the_tiers_and_their_agents() -> None:
    rows = rows_for([tpu_holder("research"), tpu_holder("backtest", node="local-primary-tpu-1")],
                    agents(accelerated=8))
    table = filters.capacity_table([row(rows, "google.com/tpu", "tpu")])
    assert table.splitlines()[1] == ("      Tier 'accelerated' needs 32 google.com/tpu (accelerated-0, accelerated-1, "
                                     "accelerated-2, accelerated-3, accelerated-4 and 3 more)")
    assert "Tier" not in filters.capacity_table([row(rows, "cpu", "tpu")])  # only SHORT rows explain


def test_many_holders_are_summarised() -> None:
    held = [pod(f"p{index}", f"team-{index}", "local-primary-general-0", {"cpu": f"{index + 1}"})
            for index in range(6)]
    table = filters.capacity_table([row(rows_for(held, agents(standard=1)), "cpu", "general")])
    assert "held by team-5 6, team-4 5, team-3 4, team-2 3 and 2 more namespace(s) 3" in table


def test_filters_are_registered() -> None:
    registered = filters.FilterModule().filters()
    for name in ("sapphire_free_capacity", "sapphire_capacity_rows", "sapphire_capacity_table", "sapphire_node_fits"):
        assert name in registered


def test_only_nodes_reporting_ready_true_count_as_ready() -> None:
    """The cluster role waits for kwok only while a node is not Ready (a converged cluster skips the wait)."""
    def node(name: str, conditions: list[dict[str, str]] | None) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"conditions": conditions} if conditions is not None else {}}

    nodes = [node("ready", [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]),
             node("not-ready", [{"type": "Ready", "status": "False"}]),
             node("unknown", [{"type": "Ready", "status": "Unknown"}]),
             node("new", None)]
    assert filters.not_ready_nodes(nodes) == ["not-ready", "unknown", "new"]
    assert filters.not_ready_nodes(nodes[:1]) == []
    assert "sapphire_not_ready_nodes" in filters.FilterModule().filters()
