"""sapphire_namespace_info `blocked`: what the deploy's final wait stops on instead of waiting 300 s.

Issue 10, item 4: the deploy waited 300 s on pods the scheduler had already refused with
"Insufficient google.com/tpu". A pod unschedulable only for reasons a wait does not change, or a
ReplicaSet whose pods are refused (quota, Pod Security), is listed once it has been so for
`unschedulable_after` seconds; anything that can still pass (a starting node, an unbound claim,
preemption under way) is not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import load_module

mod = load_module("sapphire_namespace_info")
NOW = datetime(2026, 11, 3, 10, 0, 0, tzinfo=UTC).timestamp()
AFTER = 30.0
# As kube-scheduler v1.34 wrote it on local-primary (the DRA plugin's PostFilter text before preemption's).
TPU_SHORT = ("0/6 nodes are available: 2 Insufficient google.com/tpu, 4 node(s) didn't match Pod's node "
             "affinity/selector. no new claims to deallocate, preemption: 0/6 nodes are available: 2 No preemption "
             "victims found for incoming pod, 4 Preemption is not helpful for scheduling.")
OLDER_TPU_SHORT = ("0/6 nodes are available: 2 Insufficient google.com/tpu, 4 node(s) didn't match Pod's node "
                   "affinity/selector. preemption: 0/6 nodes are available: 2 No preemption victims found for "
                   "incoming pod, 4 Preemption is not helpful for scheduling.")


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending(message: str, seconds_ago: float = 60, reason: str = "Unschedulable",
            **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "agent-scalping-7d9f-abcde", "namespace": "trading-system"},
            "status": {"phase": "Pending", **status,
                       "conditions": [{"type": "PodScheduled", "status": "False", "reason": reason,
                                       "message": message, "lastTransitionTime": stamp(seconds_ago)}]}}


def refused(message: str, seconds_ago: float = 60, replicas: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "agent-momentum-5d8f", "namespace": "trading-system"},
            "spec": {"replicas": replicas},
            "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                       "message": message, "lastTransitionTime": stamp(seconds_ago)}]}}


@pytest.mark.parametrize(
    ("pod", "is_blocked"),
    [
        (pending(TPU_SHORT), True),
        (pending(OLDER_TPU_SHORT), True),
        (pending("0/6 nodes are available: 6 Insufficient cpu."), True),
        (pending("0/6 nodes are available: 6 Too many pods."), True),
        (pending("0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector."), True),
        # kube-scheduler 1.34 names no taint; older releases do
        (pending("0/6 nodes are available: 2 node(s) had untolerated taint(s), 4 Insufficient memory."), True),
        (pending("0/6 nodes are available: 2 node(s) had untolerated taint {google.com/tpu: present}, "
                 "4 node(s) didn't match Pod's node affinity/selector."), True),
        # the scheduler has not been at it for long enough: a rolling update may still free the room
        (pending(TPU_SHORT, seconds_ago=5), False),
        # a node that is still starting (lifecycle taint), a claim not bound yet, a cordoned node: may pass
        (pending("0/6 nodes are available: 6 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."), False),
        (pending("0/6 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/6 nodes "
                 "are available: 6 Preemption is not helpful for scheduling."), False),
        (pending("0/6 nodes are available: 2 Insufficient cpu, 4 node(s) were unschedulable."), False),
        (pending("no nodes available to schedule pods"), False),
        # preemption has nominated a node: the victims are going away
        (pending(TPU_SHORT, nominatedNodeName="local-primary-tpu-0"), False),
        (pending(TPU_SHORT, reason="SchedulerError"), False),
        ({"metadata": {"name": "ready"}, "status": {"phase": "Running",
                                                    "conditions": [{"type": "PodScheduled", "status": "True"}]}},
         False),
    ],
)
def test_a_pod_is_blocked_only_for_reasons_a_wait_cannot_change(pod: dict[str, Any], is_blocked: bool) -> None:
    found = mod.blocked({"pods": [pod], "replicasets": []}, NOW, AFTER)
    assert bool(found) is is_blocked
    if is_blocked:
        assert found[0]["kind"] == "pod" and found[0]["name"] == "agent-scalping-7d9f-abcde"
        assert found[0]["msg"].startswith("pod agent-scalping-7d9f-abcde cannot be scheduled (for 60 s): 0/6 nodes")


def test_the_blocked_pod_names_the_reason() -> None:
    (item,) = mod.blocked({"pods": [pending(TPU_SHORT)], "replicasets": []}, NOW, AFTER)
    assert "Insufficient google.com/tpu" in item["msg"]
    assert item["seconds"] == 60


@pytest.mark.parametrize(
    ("replicaset", "is_blocked"),
    [
        (refused('pods "agent-momentum-5d8f-x" is forbidden: exceeded quota: trading-quota, requested: '
                 "requests.google.com/tpu=4, used: requests.google.com/tpu=8, limited: requests.google.com/tpu=8"),
         True),
        (refused('pods "agent-momentum-5d8f-x" is forbidden: violates PodSecurity "restricted:latest": '
                 "runAsNonRoot != true"), True),
        (refused("exceeded quota: trading-quota", seconds_ago=3), False),
        (refused("exceeded quota: trading-quota", replicas=0), False),  # scaled away: nothing to create
    ],
)
def test_a_replicaset_whose_pods_are_refused_is_blocked(replicaset: dict[str, Any], is_blocked: bool) -> None:
    found = mod.blocked({"pods": [], "replicasets": [replicaset]}, NOW, AFTER)
    assert bool(found) is is_blocked
    if is_blocked:
        assert found[0]["msg"].startswith("replicaset agent-momentum-5d8f cannot create pods (for 60 s): pods ")


@pytest.mark.parametrize(
    ("message", "reasons"),
    [
        (TPU_SHORT, ["Insufficient google.com/tpu", "node(s) didn't match Pod's node affinity/selector"]),
        (OLDER_TPU_SHORT, ["Insufficient google.com/tpu", "node(s) didn't match Pod's node affinity/selector"]),
        ("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are "
         "available: 3 Preemption is not helpful for scheduling.",
         ["pod has unbound immediate PersistentVolumeClaims"]),
        ("0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
         "2 Insufficient cpu.", ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }", "Insufficient cpu"]),
        ("no nodes available to schedule pods", []),
        ("", []),
    ],
)
def test_node_reasons_parse_the_scheduler_message(message: str, reasons: list[str]) -> None:
    assert mod.node_reasons(message) == reasons


def test_zero_grace_and_unknown_age() -> None:
    pod = pending(TPU_SHORT, seconds_ago=0)
    assert mod.blocked({"pods": [pod], "replicasets": []}, NOW, 0.0)
    del pod["status"]["conditions"][0]["lastTransitionTime"]
    assert mod.blocked({"pods": [pod], "replicasets": []}, NOW, 0.0) == []


def test_the_checks_still_fail_the_blocked_pod() -> None:
    """blocked is what the wait stops on; the pod's failing check (and its reason) is still reported."""
    from kubernetes.utils import parse_quantity

    objects: dict[str, list[dict[str, Any]]] = {key: [] for key in ("deployments", "statefulsets", "replicasets",
                                                                    "pods", "pvcs", "quotas", "hpas")}
    objects["pods"] = [pending(TPU_SHORT)]
    checks, _ = mod.evaluate(objects, {"quota_warn_percent": 80.0, "quota_fail_percent": 90.0}, parse_quantity)
    assert any(check["name"] == "pod:agent-scalping-7d9f-abcde" and check["status"] == "fail"
               and "Insufficient google.com/tpu" in check["msg"] for check in checks)
    assert [item["name"] for item in mod.blocked(objects, NOW, AFTER)] == ["agent-scalping-7d9f-abcde"]
    assert mod.blocked(objects, NOW, 120.0) == []


def test_an_unreachable_cluster_still_returns_blocked(module_runner: Any, tmp_path: Any) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n"
                          "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                          "users: [{name: u, user: {token: t}}]\n"
                          "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    result = module_runner("sapphire_namespace_info", {"kubeconfig": str(kubeconfig), "context": "c",
                                                       "request_timeout": 2})
    assert result["healthy"] is False
    assert result["blocked"] == []


def test_a_negative_grace_is_rejected_naming_it(module_runner: Any) -> None:
    result = module_runner("sapphire_namespace_info", {"unschedulable_after": -1})
    assert result.get("failed") is True
    assert "unschedulable_after" in result["msg"]


def test_the_documentation_describes_the_option_and_the_result() -> None:
    import yaml

    doc, returned = yaml.safe_load(mod.DOCUMENTATION), yaml.safe_load(mod.RETURN)
    assert doc["options"]["unschedulable_after"] == {
        "description": doc["options"]["unschedulable_after"]["description"], "type": "float", "default": 30}
    assert returned["blocked"]["returned"] == "always"
