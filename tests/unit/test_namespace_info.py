"""sapphire_namespace_info: Kubernetes objects (as the API serialises them) to checks."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_module
from kubernetes.utils import parse_quantity

mod = load_module("sapphire_namespace_info")
PARAMS = {"quota_warn_percent": 80.0, "quota_fail_percent": 90.0}


def meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "trading-system"}


def empty() -> dict[str, list[dict[str, Any]]]:
    return {key: [] for key in ("deployments", "statefulsets", "replicasets", "pods", "pvcs", "quotas", "hpas")}


@pytest.mark.parametrize(
    ("kind", "obj", "status"),
    [
        (
            "deployment",
            {"metadata": meta("coordinator"), "spec": {"replicas": 3}, "status": {"availableReplicas": 3}},
            "ok",
        ),
        (
            "deployment",
            {"metadata": meta("coordinator"), "spec": {"replicas": 3}, "status": {"availableReplicas": 1}},
            "fail",
        ),
        ("deployment", {"metadata": meta("volatility"), "spec": {"replicas": 0}, "status": {}}, "ok"),
        ("statefulset", {"metadata": meta("redis"), "spec": {"replicas": 1}, "status": {"readyReplicas": 0}}, "fail"),
    ],
)
def test_workloads_available(kind: str, obj: dict[str, Any], status: str) -> None:
    assert mod.check_workloads(kind, [obj])[0]["status"] == status


def test_pod_security_rejection_shows_on_the_replicaset() -> None:
    rs = {
        "metadata": meta("momentum-5d8f"),
        "spec": {"replicas": 2},
        "status": {
            "conditions": [
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": 'pods "momentum-5d8f-x" is forbidden: violates PodSecurity "restricted:latest": '
                    "runAsNonRoot != true",
                }
            ]
        },
    }
    checks = mod.check_replicasets([rs])
    assert checks[0]["status"] == "fail"
    assert "violates PodSecurity" in checks[0]["msg"]
    assert mod.check_replicasets([{**rs, "spec": {"replicas": 0}}]) == []


TPU_PENDING = {
    "metadata": meta("scalping-7d9f-abcde"),
    "status": {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/5 nodes are available: 2 Insufficient google.com/tpu, "
                "3 node(s) didn't match Pod's node affinity.",
            }
        ],
    },
}
CRASHING = {
    "metadata": meta("momentum-1"),
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [
            {"name": "agent", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}
        ],
    },
}
READY = {
    "metadata": meta("pairs-1"),
    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
}
DONE = {"metadata": meta("init-job-1"), "status": {"phase": "Succeeded"}}


@pytest.mark.parametrize(
    ("pod", "status", "phrase"),
    [
        (TPU_PENDING, "fail", "Insufficient google.com/tpu"),
        (CRASHING, "fail", "CrashLoopBackOff"),
        (READY, "ok", "1 pod(s) ready"),
        (DONE, "ok", "0 pod(s) ready"),
    ],
)
def test_pods_not_ready_carry_the_reason(pod: dict[str, Any], status: str, phrase: str) -> None:
    checks, not_ready = mod.check_pods([pod])
    assert checks[0]["status"] == status
    assert phrase in checks[0]["msg"]
    assert bool(not_ready) == (status == "fail")


def test_unbound_pvc_fails() -> None:
    pvcs = [
        {"metadata": meta("data-postgres-0"), "spec": {"storageClassName": "fast-ssd"}, "status": {"phase": "Pending"}},
        {"metadata": meta("data-redis-0"), "spec": {}, "status": {"phase": "Bound"}},
    ]
    checks = mod.check_pvcs(pvcs)
    assert [c["name"] for c in checks] == ["pvc:data-postgres-0"]
    assert "fast-ssd" in checks[0]["msg"]
    assert mod.check_pvcs(pvcs[1:])[0]["status"] == "ok"


@pytest.mark.parametrize(
    ("used", "hard", "status"),
    [("8", "16", "ok"), ("13", "16", "warn"), ("14500m", "16", "fail"), ("30Gi", "32Gi", "fail"), ("0", "0", "ok")],
)
def test_quota_usage_per_resource(used: str, hard: str, status: str) -> None:
    quota = {
        "metadata": meta("production-trading-quota"),
        "status": {"hard": {"requests.cpu": hard}, "used": {"requests.cpu": used}},
    }
    checks, usage = mod.check_quotas([quota], 80.0, 90.0, parse_quantity)
    assert checks[0]["status"] == status
    assert checks[0]["name"] == "quota:production-trading-quota:requests.cpu"
    assert usage[0]["hard"] == hard


@pytest.mark.parametrize(("current", "status"), [(3, "ok"), (10, "warn")])
def test_hpa_pinned_at_max(current: int, status: str) -> None:
    hpa = {"metadata": meta("coordinator"), "spec": {"maxReplicas": 10}, "status": {"currentReplicas": current}}
    assert mod.check_hpas([hpa])[0]["status"] == status


def test_empty_namespace_is_healthy() -> None:
    checks, extra = mod.evaluate(empty(), PARAMS, parse_quantity)
    assert {c["status"] for c in checks} == {"ok"}
    assert extra == {"not_ready_pods": [], "quota": []}
