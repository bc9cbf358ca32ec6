"""The local default never runs out of volumes (issue 20): its clusters behave as if they had a
storage provisioner.

Namespaces with the in-cluster data services' claims (`data-redis-0`, 20Gi; `data-postgres-0`,
100Gi; the default StorageClass, as the redis and postgres roles ask) are created and deleted
more times than the static pool has volumes; every claim binds, and every volume a deleted
namespace left behind becomes usable again (or is deleted, when it was provisioned for that
claim) without a manual step. Claims that still exist, bound or being deleted while a pod uses
them, keep their volumes untouched throughout.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, kube_binary, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLUSTER = "local-primary"
# The claims of the in-cluster data services (roles/redis, roles/postgres volumeClaimTemplates).
PLATFORM_CLAIMS = {"data-redis-0": "20Gi", "data-postgres-0": "100Gi"}


def get(clusters: LocalClusters, *args: str) -> dict[str, Any]:
    return json.loads(clusters.kubectl(CLUSTER, "get", *args, "-o", "json").stdout)


def create(clusters: LocalClusters, *objects: dict[str, Any]) -> None:
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    result = subprocess.run([str(kube_binary("kubectl")), "--kubeconfig", str(clusters.kubeconfigs[CLUSTER]),
                             "create", "-f", "-"], input=manifest, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def claim(name: str, namespace: str, size: str) -> dict[str, Any]:
    """A claim as a StatefulSet's volumeClaimTemplate makes it: no storageClassName (the default class)."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
                                                                   "labels": {"sapphire.io/test": "volumes"}}}


def volumes(clusters: LocalClusters) -> dict[str, dict[str, Any]]:
    return {pv["metadata"]["name"]: pv for pv in get(clusters, "pv")["items"]}


def bound_volumes(clusters: LocalClusters, ns: str, names: list[str], timeout: float = 90) -> dict[str, str]:
    """Wait until every claim is Bound; the volume of each. Fails with the claims' events and the volumes."""
    claims: dict[str, Any] = {}

    def all_bound() -> bool:
        nonlocal claims
        claims = {c["metadata"]["name"]: c for c in get(clusters, "-n", ns, "pvc")["items"]}
        return all(claims.get(name, {}).get("status", {}).get("phase") == "Bound" for name in names)

    try:
        wait_for(all_bound, timeout, f"the claims of {ns} to bind", interval=0.5)
    except AssertionError as exc:
        events = clusters.kubectl(CLUSTER, "-n", ns, "get", "events", check=False).stdout
        phases = {name: pv.get("status", {}).get("phase") for name, pv in volumes(clusters).items()}
        raise AssertionError(f"{exc}\nclaims: { {n: c.get('status') for n, c in claims.items()} }\n"
                             f"events:\n{events}\nvolumes: {phases}") from None
    return {name: claims[name]["spec"]["volumeName"] for name in names}


def scheduled_on_a_node(clusters: LocalClusters, ns: str, name: str, timeout: float) -> None:
    """Wait until the pod is bound to a node. Fails with the pod's status, the namespace's events and the nodes'
    readiness and taints: what the scheduler decided on."""
    try:
        wait_for(lambda: get(clusters, "-n", ns, "pod", name)["spec"].get("nodeName"), timeout,
                 f"pod {ns}/{name} to be scheduled", interval=0.5)
    except AssertionError as exc:
        pod = clusters.kubectl(CLUSTER, "-n", ns, "get", "pod", name, "-o", "json", check=False).stdout
        events = clusters.kubectl(CLUSTER, "-n", ns, "get", "events", check=False).stdout
        nodes = {node["metadata"]["name"]: ({c["type"]: c["status"] for c in node["status"].get("conditions", [])},
                                            node["spec"].get("taints", []))
                 for node in get(clusters, "nodes")["items"]}
        raise AssertionError(f"{exc}\npod: {pod}\nevents:\n{events}\nnodes: {nodes}") from None


def reclaimed(clusters: LocalClusters, names: list[str]) -> bool:
    """Every one of these volumes is Available and unclaimed again, or deleted."""
    current = volumes(clusters)
    return all(name not in current or (current[name]["status"].get("phase") == "Available"
                                       and not current[name]["spec"].get("claimRef")) for name in names)


@pytest.fixture()
def suffix(local_clusters: LocalClusters) -> Iterator[str]:
    """A unique suffix for the test's namespaces, all deleted again at the end."""
    value = uuid.uuid4().hex[:6]
    yield value
    for ns in get(local_clusters, "namespaces", "-l", "sapphire.io/test=volumes")["items"]:
        if ns["metadata"]["name"].endswith(value) or f"-{value}-" in ns["metadata"]["name"]:
            local_clusters.kubectl(CLUSTER, "delete", "namespace", ns["metadata"]["name"], "--wait=false",
                                   check=False)


def test_claims_bind_through_more_namespace_cycles_than_the_pool_has_volumes(local_clusters: LocalClusters,
                                                                            suffix: str) -> None:
    pool = [name for name, pv in volumes(local_clusters).items()
            if "sapphire.io/size" in pv["metadata"].get("labels", {})]
    assert pool, "the cluster role registers a pool of volumes"

    # Claims that exist throughout: one bound, one deleted while a pod still uses it (Terminating).
    keep = f"vol-keep-{suffix}"
    create(local_clusters, namespace(keep))
    create(local_clusters, claim("kept", keep, "10Gi"), claim("in-use", keep, "10Gi"))
    kept = bound_volumes(local_clusters, keep, ["kept", "in-use"])
    # The pod comes once its claim is bound: created beside it, the scheduler's first try finds the claim unbound, and
    # its retry may wait for the scheduler's periodic flush of unschedulable pods.
    create(local_clusters, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": keep},
        "spec": {"containers": [{"name": "main", "image": "registry.example/sapphire/probe:1.0",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "in-use"}}]}})
    # The claim protection keeps a claim while a pod *scheduled* to a node uses it (whether that node's kubelet has
    # started it yet or not), so that is what is waited for: the fake kubelet's pace is not part of this test.
    # A ceiling, not a speed: under the full suite's load the scheduler took over 60 s once.
    scheduled_on_a_node(local_clusters, keep, "user", 180)
    local_clusters.kubectl(CLUSTER, "-n", keep, "delete", "pvc", "in-use", "--wait=false")
    in_use = get(local_clusters, "-n", keep, "pvc", "in-use")
    assert in_use["metadata"].get("deletionTimestamp"), "the claim is being deleted but still exists"
    before = {name: volumes(local_clusters)[name] for name in kept.values()}

    cycles = len(pool) + 2
    for cycle in range(cycles):
        ns = f"vol-{suffix}-{cycle}"
        create(local_clusters, namespace(ns), *(claim(name, ns, size) for name, size in PLATFORM_CLAIMS.items()))
        used = bound_volumes(local_clusters, ns, list(PLATFORM_CLAIMS))
        local_clusters.kubectl(CLUSTER, "delete", "namespace", ns, "--wait=true", "--timeout=120s")

        wait_for(partial(reclaimed, local_clusters, list(used.values())), 60,
                 f"the volumes of {ns} ({used}) to be reclaimed", interval=0.5)
        current = volumes(local_clusters)
        for name in used.values():  # recycled pool volumes stay; provisioned ones went with their claim
            assert name not in current or name in pool, f"{name} was provisioned for {ns} and outlived it"

    # No volume is left behind for a namespace that is gone.
    left = [name for name, pv in volumes(local_clusters).items()
            if (pv["spec"].get("claimRef") or {}).get("namespace", "").startswith(f"vol-{suffix}-")]
    assert left == []

    # The claims that still exist kept their volumes, untouched.
    after = volumes(local_clusters)
    for name, pv in before.items():
        assert after[name]["metadata"]["resourceVersion"] == pv["metadata"]["resourceVersion"], name
        assert after[name]["spec"]["claimRef"] == pv["spec"]["claimRef"], name
        assert after[name]["status"]["phase"] == "Bound", name
    terminating = get(local_clusters, "-n", keep, "pvc", "in-use")
    assert terminating["metadata"]["uid"] == in_use["metadata"]["uid"]
    assert terminating["status"]["phase"] == "Bound" and terminating["spec"]["volumeName"] == kept["in-use"]


def test_more_claims_at_once_than_the_pool_has_volumes_all_bind(local_clusters: LocalClusters, suffix: str) -> None:
    pool = [name for name, pv in volumes(local_clusters).items()
            if "sapphire.io/size" in pv["metadata"].get("labels", {})]
    ns = f"vol-many-{suffix}"
    names = [f"data-redis-{index}" for index in range(len(pool) + 1)]
    create(local_clusters, namespace(ns), *(claim(name, ns, "20Gi") for name in names))
    used = bound_volumes(local_clusters, ns, names, timeout=120)
    assert len(set(used.values())) == len(names)
    current = volumes(local_clusters)
    provisioned = [current[name] for name in used.values() if name not in pool]
    assert provisioned, "the pool cannot hold every claim: some volumes were provisioned"
    for pv in provisioned:
        claim_ref = pv["spec"]["claimRef"]
        made_for = get(local_clusters, "-n", ns, "pvc", claim_ref["name"])
        assert pv["metadata"]["name"] == f"pvc-{made_for['metadata']['uid']}" == made_for["spec"]["volumeName"]
        assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == \
            "sapphire.io/local-volume-provisioner"
        assert pv["spec"]["capacity"]["storage"] == "20Gi" and pv["spec"]["storageClassName"] == "standard"

    local_clusters.kubectl(CLUSTER, "delete", "namespace", ns, "--wait=true", "--timeout=120s")
    wait_for(partial(reclaimed, local_clusters, list(used.values())), 90,
             f"the volumes of {ns} to be reclaimed", interval=0.5)
    current = volumes(local_clusters)
    assert [pv["metadata"]["name"] for pv in provisioned if pv["metadata"]["name"] in current] == [], \
        "a volume provisioned for a claim is deleted once the claim is gone"
