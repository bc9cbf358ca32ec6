"""sapphire_namespace_info against the local-primary cluster (real kube-apiserver, scheduler, quota
admission and PVC binding, kwok nodes), in a throw-away namespace: healthy when empty, and red for a
quota above 90 %, a TPU pod the scheduler cannot place, and an unbound PVC.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import load_library_module, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

namespace_info = load_library_module("sapphire_namespace_info")
SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def pod(name: str, requests: dict[str, str], limits: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": SECURITY,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "agent",
                    "image": "registry.sapphire.internal/sapphire/agent:2026.11.0",
                    "resources": {"requests": requests, "limits": limits},
                    "securityContext": CONTAINER_SECURITY,
                }
            ],
            **spec,
        },
    }


@pytest.fixture
def throwaway_namespace(local_clusters: Any) -> Iterator[tuple[Any, str]]:
    from kubernetes import client

    api = local_clusters.client("local-primary")
    name = f"sapphire-it-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": {"sapphire.io/test": "true"}}})
    yield api, name
    client.CoreV1Api(api).delete_namespace(name)


def run(local_clusters: Any, namespace: str) -> dict[str, Any]:
    return namespace_info.collect(
        {
            "namespace": namespace,
            "kubeconfig": str(local_clusters.kubeconfigs["local-primary"]),
            "context": "local-primary",
            "quota_warn_percent": 80.0,
            "quota_fail_percent": 90.0,
            "request_timeout": 10.0,
            "unschedulable_after": 30.0,
        }
    )


def test_empty_namespace_is_healthy_and_missing_namespace_fails(
    local_clusters: Any, throwaway_namespace: tuple[Any, str]
) -> None:
    _, name = throwaway_namespace
    result = run(local_clusters, name)
    assert result["healthy"] is True, result["problems"]
    missing = run(local_clusters, "sapphire-it-does-not-exist")
    assert missing["healthy"] is False
    assert any("does not exist" in problem for problem in missing["problems"])


def test_quota_tpu_pending_and_unbound_pvc(local_clusters: Any, throwaway_namespace: tuple[Any, str]) -> None:
    from kubernetes import client

    api, name = throwaway_namespace
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(
        name,
        {
            "metadata": {"name": "it-quota"},
            "spec": {"hard": {"requests.cpu": "1", "requests.memory": "2Gi", "pods": "10"}},
        },
    )
    wait_for(lambda: core.read_namespaced_resource_quota("it-quota", name).status.hard, 30, "quota status")
    core.create_namespaced_pod(
        name, pod("busy", {"cpu": "950m", "memory": "128Mi"}, {"cpu": "950m", "memory": "128Mi"})
    )
    core.create_namespaced_pod(
        name,
        pod(
            "scalping-tpu",
            {"cpu": "10m", "memory": "64Mi", "google.com/tpu": "8"},
            {"cpu": "10m", "memory": "64Mi", "google.com/tpu": "8"},
            tolerations=[{"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
    )
    core.create_namespaced_persistent_volume_claim(
        name,
        {
            "metadata": {"name": "data-orphan"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "no-such-class",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )

    def scheduler_gave_up() -> bool:
        conditions = core.read_namespaced_pod("scalping-tpu", name).status.conditions or []
        return any(c.type == "PodScheduled" and c.status == "False" for c in conditions)

    wait_for(scheduler_gave_up, 60, "the scheduler to reject the TPU pod")
    wait_for(
        lambda: core.read_namespaced_resource_quota("it-quota", name).status.used.get("requests.cpu") == "960m",
        30,
        "quota usage",
    )
    result = run(local_clusters, name)
    checks = {item["name"]: item for item in result["checks"]}
    assert result["healthy"] is False
    assert checks["quota:it-quota:requests.cpu"]["status"] == "fail"
    assert checks["quota:it-quota:requests.cpu"]["observed"] == 96.0
    assert checks["pod:scalping-tpu"]["status"] == "fail"
    assert "Insufficient google.com/tpu" in checks["pod:scalping-tpu"]["msg"]
    assert checks["pvc:data-orphan"]["status"] == "fail"
    assert "no-such-class" in checks["pvc:data-orphan"]["msg"]
    assert checks["quota:it-quota:requests.memory"]["status"] == "ok"
