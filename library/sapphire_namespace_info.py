#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_namespace_info
short_description: Check the health of the trading namespace in one call
description:
  - Lists, in one module run with one API client, the Deployments, StatefulSets, ReplicaSets,
    Pods, PersistentVolumeClaims, ResourceQuotas and HorizontalPodAutoscalers of O(namespace) and
    reports as data
  - Deployments and StatefulSets with fewer available (ready) replicas than desired (fail);
  - pods that are not ready, with the scheduler's reason (C(PodScheduled=False), for example
    C(Insufficient google.com/tpu)) or the kubelet's (a container waiting in C(CrashLoopBackOff),
    C(ImagePullBackOff)...) (fail);
  - ReplicaSets whose C(ReplicaFailure) condition is true, typically C(FailedCreate) because Pod
    Security admission rejected the pods (fail) - the Deployment itself is accepted, so this is
    the only place the rejection shows;
  - PersistentVolumeClaims that are not bound (fail);
  - ResourceQuota usage per resource against O(quota_warn_percent) and O(quota_fail_percent)
    (the seed's elastic-monitor);
  - HorizontalPodAutoscalers at their C(maxReplicas) (warn - they cannot absorb more load).
  - Lists in RV(blocked) what waiting cannot fix, so a wait loop can stop early and name it - a pod the
    scheduler has found unschedulable for at least O(unschedulable_after) seconds only for reasons that do
    not pass by themselves (C(Insufficient <resource>), C(Too many pods), the nodeSelector or affinity
    matching no node, a taint it does not tolerate other than the node lifecycle taints
    C(node.kubernetes.io/*)), with no node nominated for it by preemption; and a ReplicaSet whose pods have
    been refused (C(FailedCreate), by quota, Pod Security or a LimitRange) for as long.
  - An unreachable API server or a missing namespace is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  namespace:
    description: Namespace to check.
    type: str
    default: trading-system
  kubeconfig:
    description: Path of the kubeconfig; omitted means C(KUBECONFIG), C(~/.kube/config) or in-cluster.
    type: path
  context:
    description: Context of the kubeconfig to use.
    type: str
  quota_warn_percent:
    description: Quota usage percentage at which a resource warns.
    type: float
    default: 80
  quota_fail_percent:
    description: Quota usage percentage at which a resource fails.
    type: float
    default: 90
  request_timeout:
    description: Seconds to wait for each API request.
    type: float
    default: 10
  unschedulable_after:
    description:
      - Seconds a pod must have been unschedulable, or a ReplicaSet unable to create pods, for a reason waiting
        cannot fix before it is listed in RV(blocked). The grace lets a rolling update or a starting node pass.
      - Raise it on clusters whose autoscaler adds nodes for pending pods (C(Insufficient cpu) is temporary there).
    type: float
    default: 30
extends_documentation_fragment:
  - sapphire.health
requirements:
  - kubernetes (the Python client) >= 24
"""

EXAMPLES = r"""
- name: Check the trading namespace of the local-primary cluster
  sapphire_namespace_info:
    kubeconfig: "{{ k8s_kubeconfig }}"
    context: "{{ k8s_context }}"
    namespace: trading-system
  register: namespace_health
"""

RETURN = r"""
healthy:
  description: True when no check failed.
  returned: always
  type: bool
target:
  description: Cluster context and namespace.
  returned: always
  type: str
checks:
  description: >-
    kubernetes_api, namespace, then deployment:<name>, statefulset:<name>, replicaset:<name>
    (failures only), pod:<name> (not ready only, else one pods check), pvc:<name> (unbound only,
    else one pvcs check), quota:<quota>:<resource>, hpa:<name>.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
not_ready_pods:
  description: Pods that are not ready, with the reason.
  returned: always
  type: list
  elements: dict
  sample:
    - pod: scalping-7d9f-abcde
      phase: Pending
      reason: "unschedulable: 0/5 nodes are available: 5 Insufficient google.com/tpu."
quota:
  description: Usage per quota and resource (used, hard, percent).
  returned: always
  type: list
  elements: dict
blocked:
  description: >-
    Pods and ReplicaSets that cannot become ready by waiting (see the description), each with kind, name,
    reason, seconds (how long it has been so) and msg (a sentence naming the object and the reason).
  returned: always
  type: list
  elements: dict
  sample:
    - kind: pod
      name: agent-scalping-7d9f-abcde
      reason: "0/6 nodes are available: 2 Insufficient google.com/tpu, 4 node(s) didn't match Pod's node
        affinity/selector."
      seconds: 42
      msg: "pod agent-scalping-7d9f-abcde cannot be scheduled (for 42 s): 0/6 nodes are available: ..."
"""

import json
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.sapphire_connections import validate_params
from ansible.module_utils.sapphire_health import by_level, fail, finish, new_result, ok, skip_all, warn

try:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.utils import parse_quantity
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item.get("type"): item for item in (obj.get("status") or {}).get("conditions") or []}


def name_of(obj: dict[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "?")


def check_workloads(kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for obj in items:
        name = name_of(obj)
        desired = (obj.get("spec") or {}).get("replicas")
        desired = 1 if desired is None else desired
        status = obj.get("status") or {}
        ready = status.get("availableReplicas" if kind == "deployment" else "readyReplicas") or 0
        observed = {"ready": ready, "desired": desired}
        if ready >= desired:
            checks.append(ok(f"{kind}:{name}", f"{kind} {name} {ready}/{desired} available", observed, desired))
            continue
        reasons = [f"{item.get('type')}={item.get('status')} {item.get('reason', '')}: "
                   f"{item.get('message', '')}".strip()
                   for item in conditions(obj).values() if item.get("status") != "True" or
                   item.get("type") == "ReplicaFailure"]
        checks.append(fail(f"{kind}:{name}", f"{kind} {name} has {ready}/{desired} replicas available"
                           + (f" ({'; '.join(reasons)})" if reasons else ""), observed, desired))
    return checks


def check_replicasets(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for obj in items:
        failure = conditions(obj).get("ReplicaFailure")
        if failure and failure.get("status") == "True" and (obj.get("spec") or {}).get("replicas", 0):
            name = name_of(obj)
            checks.append(fail(f"replicaset:{name}", f"replicaset {name} cannot create pods "
                               f"({failure.get('reason')}): {failure.get('message')}", failure.get("reason"),
                               "pods created"))
    return checks


def pod_reason(pod: dict[str, Any]) -> str:
    """Why a pod is not ready: the scheduler's reason first, then the kubelet's."""
    conds = conditions(pod)
    scheduled = conds.get("PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return f"unschedulable: {scheduled.get('message') or scheduled.get('reason')}"
    status = pod.get("status") or {}
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = container.get("state") or {}
        if state.get("waiting"):
            waiting = state["waiting"]
            return f"container {container.get('name')} waiting: {waiting.get('reason')} {waiting.get('message') or ''}"
        if state.get("terminated"):
            done = state["terminated"]
            return (f"container {container.get('name')} terminated: {done.get('reason')} "
                    f"(exit {done.get('exitCode')})")
    ready = conds.get("Ready")
    if ready:
        return f"Ready={ready.get('status')} {ready.get('reason') or ''} {ready.get('message') or ''}".strip()
    return f"phase {status.get('phase')}"


def check_pods(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    checks, not_ready = [], []
    considered = 0
    for pod in items:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded",) or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        considered += 1
        if conditions(pod).get("Ready", {}).get("status") == "True":
            continue
        name = name_of(pod)
        reason = " ".join(pod_reason(pod).split())
        not_ready.append({"pod": name, "phase": status.get("phase"), "reason": reason})
        checks.append(fail(f"pod:{name}", f"pod {name} not ready ({status.get('phase')}): {reason}",
                           status.get("phase"), "Ready"))
    if not checks:
        checks.append(ok("pods", f"{considered} pod(s) ready", considered, "Ready"))
    return checks, not_ready


# Per-node reasons of the scheduler that no wait changes (kube-scheduler's filter plugins).
_PERMANENT_NODE_REASONS = (
    re.compile(r"^Insufficient \S+$"),
    re.compile(r"^Too many pods$"),
    re.compile(r"^node\(s\) didn't match Pod's node affinity(/selector)?$"),
    re.compile(r"^node\(s\) had untolerated taint\(s\)$"),
    re.compile(r"^node\(s\) had untolerated taint \{(?!node\.kubernetes\.io/|node\.cloudprovider\.kubernetes\.io/"
               r"|ToBeDeletedByClusterAutoscaler|DeletionCandidateOfClusterAutoscaler)[^}]*\}$"),
)


def node_reasons(message: str) -> list[str]:
    """The reasons of a scheduler message, counts dropped.

    kube-scheduler writes "0/X nodes are available: <PreFilter message>. <per-node histogram>. <PostFilter
    messages>", e.g. "0/6 nodes are available: 2 Insufficient google.com/tpu, 4 node(s) didn't match Pod's node
    affinity/selector. no new claims to deallocate, preemption: 0/6 nodes are available: ..." -> ["Insufficient
    google.com/tpu", "node(s) didn't match Pod's node affinity/selector"]. The histogram (every part counted) is
    what the nodes said; a PreFilter message stands alone (no histogram follows it); PostFilter text is dropped.
    """
    text = " ".join((message or "").split())
    match = re.search(r"nodes are available:(.*)$", text)
    if not match:
        return []
    for sentence in re.split(r"\.(?:\s+|$)", match.group(1).strip()):
        parts = [part.strip() for part in sentence.split(", ") if part.strip()]
        if not parts:
            continue
        if all(re.match(r"^\d+ ", part) for part in parts):
            return [re.sub(r"^\d+ ", "", part) for part in parts]
        return [sentence.strip()]  # a PreFilter message: no node was even looked at
    return []


def cannot_wait(message: str) -> bool:
    """Whether every reason the scheduler gives is one that waiting does not change."""
    reasons = node_reasons(message)
    return bool(reasons) and all(any(pattern.match(reason) for pattern in _PERMANENT_NODE_REASONS)
                                 for reason in reasons)


def seconds_since(stamp: str | None, now: float) -> float | None:
    """Seconds from an RFC 3339 timestamp of the API ("2026-11-03T10:00:00Z") to now; None when unknown."""
    if not stamp:
        return None
    try:
        return now - datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def blocked_pod(pod: dict[str, Any], now: float, after: float) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    scheduled = conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable":
        return None
    if status.get("nominatedNodeName") or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None  # preemption is making room for it, or it is going away
    message = " ".join((scheduled.get("message") or "").split())
    seconds = seconds_since(scheduled.get("lastTransitionTime"), now)
    if not cannot_wait(message) or seconds is None or seconds < after:
        return None
    name = name_of(pod)
    return {"kind": "pod", "name": name, "reason": message, "seconds": round(seconds),
            "msg": f"pod {name} cannot be scheduled (for {round(seconds)} s): {message}"}


def blocked_replicaset(replicaset: dict[str, Any], now: float, after: float) -> dict[str, Any] | None:
    failure = conditions(replicaset).get("ReplicaFailure") or {}
    if failure.get("status") != "True" or failure.get("reason") != "FailedCreate" \
            or not (replicaset.get("spec") or {}).get("replicas", 0):
        return None
    seconds = seconds_since(failure.get("lastTransitionTime"), now)
    if seconds is None or seconds < after:
        return None
    name, message = name_of(replicaset), " ".join((failure.get("message") or "").split())
    return {"kind": "replicaset", "name": name, "reason": message, "seconds": round(seconds),
            "msg": f"replicaset {name} cannot create pods (for {round(seconds)} s): {message}"}


def blocked(objects: dict[str, list[dict[str, Any]]], now: float, after: float) -> list[dict[str, Any]]:
    """What waiting cannot fix: pods unschedulable for good, ReplicaSets whose pods are refused."""
    found = [blocked_pod(pod, now, after) for pod in objects.get("pods") or []]
    found += [blocked_replicaset(rs, now, after) for rs in objects.get("replicasets") or []]
    return [item for item in found if item]


def check_pvcs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for pvc in items:
        phase = (pvc.get("status") or {}).get("phase")
        if phase != "Bound":
            name = name_of(pvc)
            storage_class = (pvc.get("spec") or {}).get("storageClassName")
            checks.append(fail(f"pvc:{name}", f"persistentvolumeclaim {name} is {phase}, not Bound (storage class "
                               f"{storage_class}); its pod cannot start: check the provisioner or the class name",
                               phase, "Bound"))
    if not checks:
        checks.append(ok("pvcs", f"{len(items)} persistentvolumeclaim(s) bound", len(items), "Bound"))
    return checks


def check_quotas(items: list[dict[str, Any]], warn_at: float, fail_at: float,
                 parse: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    checks, usage = [], []
    for quota in items:
        name = name_of(quota)
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for resource in sorted(hard):
            try:
                limit, current = float(parse(hard[resource])), float(parse(used.get(resource, "0")))
            except (ValueError, TypeError, ArithmeticError):
                continue
            percent = round(100.0 * current / limit, 1) if limit > 0 else (100.0 if current > 0 else 0.0)
            usage.append({"quota": name, "resource": resource, "used": used.get(resource, "0"),
                          "hard": hard[resource], "percent": percent})
            check = by_level(f"quota:{name}:{resource}", percent, warn_at, fail_at,
                             f"quota {name}: {resource} {used.get(resource, '0')} of {hard[resource]} used", unit="%")
            if check["status"] != "ok":
                check["msg"] += "; scale down or raise namespace_quota"
            checks.append(check)
    return checks, usage


def check_hpas(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for hpa in items:
        name = name_of(hpa)
        maximum = (hpa.get("spec") or {}).get("maxReplicas")
        current = (hpa.get("status") or {}).get("currentReplicas") or 0
        if maximum and current >= maximum:
            checks.append(warn(f"hpa:{name}", f"autoscaler {name} is pinned at its maximum of {maximum} replicas; it "
                               "cannot absorb more load (raise maxReplicas or the tier's capacity)", current, maximum))
        else:
            checks.append(ok(f"hpa:{name}", f"autoscaler {name} at {current}/{maximum}", current, maximum))
    return checks


def evaluate(objects: dict[str, list[dict[str, Any]]], params: dict[str, Any],
             parse: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    checks = check_workloads("deployment", objects["deployments"])
    checks += check_workloads("statefulset", objects["statefulsets"])
    checks += check_replicasets(objects["replicasets"])
    pod_checks, not_ready = check_pods(objects["pods"])
    checks += pod_checks
    checks += check_pvcs(objects["pvcs"])
    quota_checks, usage = check_quotas(objects["quotas"], params["quota_warn_percent"], params["quota_fail_percent"],
                                       parse)
    checks += quota_checks
    checks += check_hpas(objects["hpas"])
    return checks, {"not_ready_pods": not_ready, "quota": usage}


def gather(api: Any, namespace: str, timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Every kind the checks read, listed concurrently as plain JSON.

    The raw responses are parsed with json instead of the client's typed models: turning hundreds
    of pods into V1Pod objects and back into dicts costs more than the requests themselves.
    """
    core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
    autoscaling = k8s_client.AutoscalingV2Api(api)
    calls = {
        "deployments": apps.list_namespaced_deployment, "statefulsets": apps.list_namespaced_stateful_set,
        "replicasets": apps.list_namespaced_replica_set, "pods": core.list_namespaced_pod,
        "pvcs": core.list_namespaced_persistent_volume_claim, "quotas": core.list_namespaced_resource_quota,
        "hpas": autoscaling.list_namespaced_horizontal_pod_autoscaler,
    }

    def items(call: Any) -> list[dict[str, Any]]:
        response = call(namespace, _request_timeout=timeout, _preload_content=False)
        return json.loads(response.data).get("items") or []

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {key: pool.submit(items, call) for key, call in calls.items()}
        return {key: future.result() for key, future in futures.items()}


def collect(params: dict[str, Any]) -> dict[str, Any]:
    namespace = params["namespace"]
    result = new_result(f"{params.get('context') or 'current context'}/{namespace}")
    result.update(not_ready_pods=[], quota=[], blocked=[])
    timeout = params["request_timeout"]
    try:
        if params.get("kubeconfig") or params.get("context"):
            api = k8s_config.new_client_from_config(config_file=params.get("kubeconfig"), context=params.get("context"))
        else:
            try:
                k8s_config.load_incluster_config()
            except k8s_config.ConfigException:
                k8s_config.load_kube_config()
            api = k8s_client.ApiClient()
        k8s_client.CoreV1Api(api).read_namespace(namespace, _request_timeout=timeout)
    except k8s_client.ApiException as exc:
        if exc.status == 404:
            result["checks"] = [ok("kubernetes_api", "API server reachable", True, True),
                                fail("namespace", f"namespace {namespace} does not exist; run deploy.yml", "missing",
                                     "present")]
        else:
            result["checks"] = [fail("kubernetes_api", f"API error reading namespace {namespace}: {exc.status} "
                                     f"{exc.reason}", exc.status, 200)]
        return finish(result)
    except Exception as exc:  # unreachable API server or unreadable kubeconfig is a finding
        result["checks"] = [fail("kubernetes_api", f"cannot reach the Kubernetes API ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}); check kubeconfig/context and that the "
                                 "cluster is up", False, True)]
        result["checks"] += skip_all(["namespace"], "API unreachable")
        return finish(result)
    try:
        objects = gather(api, namespace, timeout)
    except Exception as exc:  # e.g. RBAC forbids listing a kind
        result["checks"] = [fail("kubernetes_api", f"listing objects in {namespace} failed: "
                                 f"{' '.join(str(exc).split())[:300]}", False, True)]
        return finish(result)
    checks, extra = evaluate(objects, params, parse_quantity)
    result["checks"] = [ok("kubernetes_api", "API server reachable", True, True),
                        ok("namespace", f"namespace {namespace} exists", "present", "present"), *checks]
    result.update(extra)
    result["blocked"] = blocked(objects, time.time(), params["unschedulable_after"])
    return finish(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "namespace": {"type": "str", "default": "trading-system"},
            "kubeconfig": {"type": "path"},
            "context": {"type": "str"},
            "quota_warn_percent": {"type": "float", "default": 80.0},
            "quota_fail_percent": {"type": "float", "default": 90.0},
            "request_timeout": {"type": "float", "default": 10.0},
            "unschedulable_after": {"type": "float", "default": 30.0},
        },
        supports_check_mode=True,
    )
    validate_params(module, percents=("quota_warn_percent", "quota_fail_percent"), positive=("request_timeout",),
                    non_negative=("unschedulable_after",))
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    module.exit_json(**collect(module.params))


if __name__ == "__main__":
    main()
