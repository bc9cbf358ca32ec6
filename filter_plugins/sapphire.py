"""Controller-side filters shared by the roles: labels, security contexts, quantities.

Kept here once so every role renders the same labels and the same restricted-profile
security settings, and so capacity arithmetic (preflight) is done in Python, not Jinja.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from ansible.errors import AnsibleFilterError

PART_OF = "sapphire"
MANAGED_BY = "sapphire-ops"
APPLIED_HASH = "sapphire.io/applied-hash"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("100m", "1.5Gi", 2) as a Decimal of base units."""
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 384Mi, 1.5Gi)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity") from exc
    return base * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def is_quantity(value: Any) -> bool:
    try:
        parse_quantity(value)
    except AnsibleFilterError:
        return False
    return True


def quantity(value: Any) -> float:
    """Filter: a quantity as a float of base units (cores, bytes)."""
    return float(parse_quantity(value))


def format_quantity(value: float, resource: str) -> str:
    """Filter: a number of base units as a readable quantity for the resource."""
    amount = Decimal(str(value))
    if resource.endswith("cpu"):
        millis = (amount * 1000).quantize(Decimal(1))
        return f"{millis / 1000}" if millis % 1000 == 0 else f"{millis}m"
    if "memory" in resource or "storage" in resource:
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if amount >= _BINARY[suffix]:
                scaled = amount / _BINARY[suffix]
                return f"{scaled.quantize(Decimal('0.01')).normalize():f}{suffix}"
        return f"{amount}"
    return f"{amount.normalize():f}"


def sapphire_labels(component: str, release: str, name: str | None = None,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """Filter: the labels every object of the platform carries (DESIGN.md)."""
    labels = {
        "app.kubernetes.io/name": name or component,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": str(release),
    }
    labels.update(extra or {})
    return labels


def sapphire_selector(component: str, name: str | None = None) -> dict[str, str]:
    """Filter: the stable subset of the labels used as a workload selector."""
    return {
        "app.kubernetes.io/name": name or component,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def pod_security_context(uid: int = 10001, gid: int | None = None) -> dict[str, Any]:
    """Filter: a pod securityContext admitted by Pod Security "restricted"."""
    group = uid if gid is None else gid
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": group, "fsGroup": group,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context(read_only_root: bool = True) -> dict[str, Any]:
    """Filter: a container securityContext admitted by Pod Security "restricted"."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": bool(read_only_root),
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def missing_node_pools(nodes: list[dict[str, Any]], pools: list[dict[str, Any]]) -> list[str]:
    """Filter: sentences naming what the cluster's nodes lack of the declared node pools."""
    missing: list[str] = []
    for pool in pools:
        labels = pool.get("labels") or {}
        members = [node for node in nodes
                   if all((node.get("metadata", {}).get("labels") or {}).get(k) == str(v) for k, v in labels.items())]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        if not members:
            missing.append(f"node pool '{pool['name']}' has no node labelled {selector}")
            continue
        for taint in pool.get("taints") or []:
            lacking = [node["metadata"]["name"] for node in members
                       if not any(t.get("key") == taint["key"] and t.get("effect") == taint["effect"]
                                  and t.get("value", "") == taint.get("value", "")
                                  for t in node.get("spec", {}).get("taints") or [])]
            if lacking:
                missing.append(f"node pool '{pool['name']}': nodes {', '.join(lacking)} lack the taint "
                               f"{taint['key']}={taint.get('value', '')}:{taint['effect']}")
        accelerator = pool.get("accelerator")
        if accelerator:
            offering = [node for node in members
                        if parse_quantity((node.get("status", {}).get("allocatable") or {})
                                          .get(accelerator["resource"], 0)) >= Decimal(str(accelerator["count"]))]
            if not offering:
                missing.append(f"node pool '{pool['name']}': no node advertises {accelerator['count']} "
                               f"{accelerator['resource']} allocatable")
    return missing


def default_storage_classes(storage_classes: list[dict[str, Any]]) -> list[str]:
    """Filter: names of the StorageClasses annotated as the cluster default."""
    keys = ("storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class")
    return [sc["metadata"]["name"] for sc in storage_classes
            if any((sc["metadata"].get("annotations") or {}).get(key) == "true" for key in keys)]


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TIER_KEYS = ("cpu", "memory", "cpu_limit", "memory_limit")


def tier_problems(agent_tiers: dict[str, Any]) -> list[str]:
    """Filter: sentences naming what is wrong in agent_tiers (quantities, requests above limits)."""
    problems: list[str] = []
    if not isinstance(agent_tiers, dict) or not agent_tiers:
        return ["agent_tiers must be a non-empty mapping of tier name to {cpu, memory, cpu_limit, memory_limit}"]
    for name, tier in agent_tiers.items():
        where = f"agent_tiers.{name}"
        if not isinstance(tier, dict):
            problems.append(f"{where} must be a mapping with cpu, memory, cpu_limit and memory_limit")
            continue
        for key in _TIER_KEYS:
            if key not in tier:
                problems.append(f"{where}.{key} is missing")
            elif not is_quantity(tier[key]):
                problems.append(f"{where}.{key} '{tier[key]}' is not a Kubernetes quantity (e.g. 300m, 384Mi, 1.5Gi)")
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            if is_quantity(tier.get(request)) and is_quantity(tier.get(limit)) \
                    and parse_quantity(tier[request]) > parse_quantity(tier[limit]):
                problems.append(f"{where}.{request} {tier[request]} is above its limit {where}.{limit} {tier[limit]}")
        accelerator = tier.get("accelerator")
        if accelerator is not None:
            if not isinstance(accelerator, dict) or not accelerator.get("resource"):
                problems.append(f"{where}.accelerator needs a resource (google.com/tpu or nvidia.com/gpu) and a count")
            elif not isinstance(accelerator.get("count"), int) or isinstance(accelerator.get("count"), bool) \
                    or accelerator["count"] < 1:
                problems.append(f"{where}.accelerator.count must be a whole number of devices >= 1")
    return problems


def ensemble_problems(trading_agents: list[Any], agent_tiers: dict[str, Any]) -> list[str]:
    """Filter: sentences naming what is wrong in trading_agents, each naming the entry and field."""
    problems: list[str] = []
    if not isinstance(trading_agents, list):
        return ["trading_agents must be a list of {name, strategy, tier, replicas}"]
    tiers = sorted(agent_tiers) if isinstance(agent_tiers, dict) else []
    seen: dict[str, int] = {}
    for index, agent in enumerate(trading_agents):
        where = f"trading_agents[{index}]"
        if not isinstance(agent, dict):
            problems.append(f"{where} must be a mapping with name, strategy, tier and replicas")
            continue
        name = agent.get("name")
        label = f"{where} ({name})" if name else where
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name is missing")
        elif len(name) > 63:
            problems.append(f"{label}.name is {len(name)} characters long; Kubernetes names allow at most 63")
        elif not _DNS1123_LABEL.match(name):
            problems.append(f"{label}.name '{name}' is not a DNS-1123 label (lower-case letters, digits and '-', "
                            "starting and ending with a letter or digit)")
        if isinstance(name, str) and name:
            if name in seen:
                problems.append(f"{label}.name '{name}' duplicates trading_agents[{seen[name]}]")
            else:
                seen[name] = index
        tier = agent.get("tier")
        if tier not in tiers:
            problems.append(f"{label}.tier '{tier}' is not one of agent_tiers: {', '.join(tiers)}")
        replicas = agent.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            problems.append(f"{label}.replicas '{replicas}' must be a whole number >= 0")
        if not agent.get("strategy"):
            problems.append(f"{label}.strategy is missing")
    return problems


def _add(totals: dict[str, Decimal], key: str, amount: Decimal) -> None:
    totals[key] = totals.get(key, Decimal(0)) + amount


def workload_rows(name: str, replicas: int, resources: dict[str, Any], storage: str | None = None,
                  pod: bool = True) -> list[dict[str, Any]]:
    """Filter: one needs row from a role's {requests, limits} resources variable."""
    requests = resources.get("requests", {})
    limits = resources.get("limits", requests)
    cpu, memory = requests.get("cpu", 0), requests.get("memory", 0)
    row = {"name": name, "replicas": replicas, "pod": pod, "cpu": cpu, "memory": memory,
           "cpu_limit": limits.get("cpu", cpu), "memory_limit": limits.get("memory", memory)}
    if storage:
        row["storage"] = storage
    return [row]


def ensemble_needs(trading_agents: list[dict[str, Any]], agent_tiers: dict[str, Any],
                   workloads: list[dict[str, Any]] | None = None, scale_to_zero: bool = False) -> dict[str, float]:
    """Filter: what the ensemble plus other workloads request, per quota resource name.

    workloads: [{name, replicas, cpu, memory, cpu_limit, memory_limit, storage?, accelerator?}] for the
    coordinator and in-cluster data services.
    """
    totals: dict[str, Decimal] = {}
    rows = list(workloads or [])
    for agent in trading_agents:
        tier = agent_tiers[agent["tier"]]
        rows.append({**tier, "name": agent["name"], "replicas": 0 if scale_to_zero else agent.get("replicas", 1)})
    for row in rows:
        replicas = Decimal(int(row.get("replicas", 1)))
        if row.get("pod", True):  # a sidecar row adds resources, not a pod
            _add(totals, "pods", replicas)
        _add(totals, "requests.cpu", replicas * parse_quantity(row["cpu"]))
        _add(totals, "requests.memory", replicas * parse_quantity(row["memory"]))
        _add(totals, "limits.cpu", replicas * parse_quantity(row.get("cpu_limit", row["cpu"])))
        _add(totals, "limits.memory", replicas * parse_quantity(row.get("memory_limit", row["memory"])))
        if row.get("storage"):
            _add(totals, "requests.storage", replicas * parse_quantity(row["storage"]))
            _add(totals, "persistentvolumeclaims", replicas)
        accelerator = row.get("accelerator")
        if accelerator:
            _add(totals, "requests." + accelerator["resource"], replicas * Decimal(int(accelerator["count"])))
    return {key: float(value) for key, value in totals.items()}


def quota_shortfalls(needs: dict[str, float], quota: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter: rows {resource, needed, limit, ok} comparing needs with a ResourceQuota's hard limits."""
    rows = []
    for resource, needed in sorted(needs.items()):
        if resource not in quota:
            continue
        limit = float(parse_quantity(quota[resource]))
        rows.append({"resource": resource, "needed": format_quantity(needed, resource),
                     "limit": format_quantity(limit, resource), "ok": needed <= limit})
    return rows


def needs_table(rows: list[dict[str, Any]]) -> str:
    """Filter: a plain-text needs-vs-limits table for failure messages."""
    lines = [f"{'resource':<28} {'needed':>12} {'limit':>12}  verdict"]
    for row in rows:
        lines.append(f"{row['resource']:<28} {row['needed']:>12} {row['limit']:>12}  "
                     f"{'ok' if row['ok'] else 'SHORT'}")
    return "\n".join(lines)


def node_capacity(nodes: list[dict[str, Any]]) -> dict[str, float]:
    """Filter: allocatable cpu, memory, pods and extended resources summed over Ready, schedulable nodes."""
    totals: dict[str, Decimal] = {}
    for node in nodes:
        if node.get("spec", {}).get("unschedulable"):
            continue
        for resource, value in (node.get("status", {}).get("allocatable") or {}).items():
            key = resource if resource == "pods" else f"requests.{resource}"
            _add(totals, key, parse_quantity(value))
    return {key: float(value) for key, value in totals.items()}


def not_ready_nodes(nodes: list[dict[str, Any]]) -> list[str]:
    """Filter: names of the nodes whose Ready condition is not True (a node without conditions is not Ready)."""
    return [node.get("metadata", {}).get("name", "") for node in nodes
            if not any(condition.get("type") == "Ready" and condition.get("status") == "True"
                       for condition in (node.get("status", {}).get("conditions") or []))]


def stringify(mapping: dict[str, Any]) -> dict[str, str]:
    """Filter: a mapping with every value as a string (quota and resource values)."""
    return {str(key): str(value) for key, value in (mapping or {}).items()}


def accelerator_capacity(nodes: list[dict[str, Any]], node_selector: dict[str, str], resource: str) -> float:
    """Filter: allocatable units of an accelerator resource on schedulable nodes matching a nodeSelector."""
    total = Decimal(0)
    for node in nodes:
        labels = node.get("metadata", {}).get("labels") or {}
        if node.get("spec", {}).get("unschedulable"):
            continue
        if all(labels.get(key) == str(value) for key, value in (node_selector or {}).items()):
            total += parse_quantity((node.get("status", {}).get("allocatable") or {}).get(resource, 0))
    return float(total)


def pool_nodes(pools: list[dict[str, Any]], cluster: str) -> list[dict[str, Any]]:
    """Filter: Node-shaped dicts for the node pools a kwok cluster registers (for capacity checks)."""
    nodes = []
    for pool in pools:
        allocatable = {"cpu": str(pool["cpu"]), "memory": str(pool["memory"]), "pods": str(pool.get("pods", 110))}
        if pool.get("accelerator"):
            allocatable[pool["accelerator"]["resource"]] = str(pool["accelerator"]["count"])
        for index in range(int(pool["count"])):
            metadata = {"name": f"{cluster}-{pool['name']}-{index}", "labels": dict(pool.get("labels") or {})}
            nodes.append({"metadata": metadata, "spec": {"taints": list(pool.get("taints") or [])},
                          "status": {"allocatable": allocatable}})
    return nodes


# ---------------------------------------------------------------- free capacity (deploy preflight)
# Labels that name a node pool; the first one all of a tier's nodes share names the pool in messages.
POOL_LABELS = ("sapphire.io/pool", "cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup",
               "kubernetes.azure.com/agentpool")
TOTAL_POOL = "total"
_HOLDER_SHOWN = 4


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Whether one of the tolerations tolerates the taint (the scheduler's rules)."""
    for toleration in tolerations or []:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        operator = toleration.get("operator") or "Equal"
        if not toleration.get("key"):
            if operator == "Exists":
                return True
            continue
        if toleration["key"] != taint.get("key"):
            continue
        if operator == "Exists" or str(toleration.get("value", "")) == str(taint.get("value", "")):
            return True
    return False


def node_fits(node: dict[str, Any], node_selector: dict[str, Any] | None,
              tolerations: list[dict[str, Any]] | None = None) -> bool:
    """Filter/test: whether pods with this nodeSelector and these tolerations can be scheduled on the node
    (not cordoned, every selector label equal, every NoSchedule/NoExecute taint tolerated)."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != str(value) for key, value in (node_selector or {}).items()):
        return False
    return all(_tolerates(tolerations or [], taint) for taint in spec.get("taints") or []
               if taint.get("effect") in ("NoSchedule", "NoExecute"))


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod holds on its node, per resource, as the scheduler counts it.

    The containers plus the sidecars (init containers with restartPolicy Always) summed, or the largest
    other init container (plus the sidecars) when that is more, plus the pod overhead; "pods" is 1.
    A resource with a limit and no request requests its limit (the API server's defaulting).
    """
    spec = pod.get("spec") or {}

    def requests(container: dict[str, Any]) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {str(key): parse_quantity(value) for key, value in merged.items()}

    inits = spec.get("initContainers") or []
    sidecars: dict[str, Decimal] = {}
    for container in inits:
        if container.get("restartPolicy") == "Always":
            for resource, amount in requests(container).items():
                _add(sidecars, resource, amount)
    total: dict[str, Decimal] = dict(sidecars)
    for container in spec.get("containers") or []:
        for resource, amount in requests(container).items():
            _add(total, resource, amount)
    for container in inits:
        if container.get("restartPolicy") != "Always":
            for resource, amount in requests(container).items():
                total[resource] = max(total.get(resource, Decimal(0)), amount + sidecars.get(resource, Decimal(0)))
    for resource, amount in (spec.get("overhead") or {}).items():
        _add(total, str(resource), parse_quantity(amount))
    total["pods"] = Decimal(1)
    return total


def _holder(pod: dict[str, Any], namespace: str, agent_names: set[str]) -> str | None:
    """Who a running pod's resources count for, or None when the deploy replaces the pod.

    Pods of other namespaces hold what they request. In the namespace being deployed, the pods of the
    platform (managed-by sapphire-ops) are replaced by the deploy, so what they hold counts as free -
    except agents no longer in trading_agents (the deploy leaves them running; cleanup.yml removes them)
    and pods sapphire-ops did not deploy.
    """
    meta = pod.get("metadata") or {}
    owner = str(meta.get("namespace") or "")
    if owner != namespace:
        return owner
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
        return f"{owner} (pods not deployed by sapphire-ops)"
    agent = labels.get("sapphire.io/agent")
    if agent and agent not in agent_names:
        return f"{owner} (agent {agent}, not in trading_agents: cleanup.yml removes it)"
    return None


def _held_per_node(pods: list[dict[str, Any]], namespace: str,
                   agent_names: set[str]) -> dict[str, dict[str, dict[str, Decimal]]]:
    """node name -> holder -> resource -> amount, for pods bound to a node that have not finished."""
    held: dict[str, dict[str, dict[str, Decimal]]] = {}
    for pod in pods or []:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        holder = _holder(pod, namespace, agent_names)
        if holder is None:
            continue
        per_holder = held.setdefault(node, {}).setdefault(holder, {})
        for resource, amount in pod_requests(pod).items():
            _add(per_holder, resource, amount)
    return held


def _pool_name(members: list[dict[str, Any]], selector: dict[str, str]) -> str:
    for label in POOL_LABELS:
        values = {((node.get("metadata") or {}).get("labels") or {}).get(label) for node in members}
        if len(values) == 1 and None not in values:
            return str(values.pop())
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items())) or "untainted nodes"


def _pool(name: str, selector: dict[str, str], tiers: list[str], members: list[dict[str, Any]],
          held: dict[str, dict[str, dict[str, Decimal]]]) -> dict[str, Any]:
    allocatable: dict[str, Decimal] = {}
    free: dict[str, Decimal] = {}
    holders: dict[str, dict[str, Decimal]] = {}
    node_free: dict[str, list[float]] = {}
    for node in members:
        offered = {str(key): parse_quantity(value)
                   for key, value in ((node.get("status") or {}).get("allocatable") or {}).items()}
        on_node = held.get(_name(node), {})
        for resource, amount in offered.items():
            _add(allocatable, resource, amount)
            taken = Decimal(0)
            for holder, resources in on_node.items():
                if resources.get(resource):
                    _add(holders.setdefault(resource, {}), holder, resources[resource])
                    taken += resources[resource]
            left = max(Decimal(0), amount - taken)
            _add(free, resource, left)
            node_free.setdefault(resource, []).append(float(left))
    return {
        "name": name, "selector": selector, "tiers": tiers, "total": False, "nodes": [_name(node) for node in members],
        "resources": {resource: {"allocatable": float(amount), "free": float(free[resource]),
                                 "holders": {holder: float(value) for holder, value in
                                             sorted(holders.get(resource, {}).items(), key=lambda item: -item[1])},
                                 "node_free": node_free[resource]}
                      for resource, amount in sorted(allocatable.items())},
    }


def _placement(tier: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The nodeSelector and tolerations the agents template gives a tier's pods."""
    selector = {str(key): str(value) for key, value in (tier.get("node_selector") or {}).items()}
    return selector, list((tier.get("accelerator") or {}).get("tolerations") or [])


def free_capacity(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], namespace: str,
                  agent_tiers: dict[str, Any],
                  trading_agents: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Filter: per node pool the tiers target, and in total, what each resource offers and who holds it.

    nodes: Node objects (or sapphire_pool_nodes); pods: the Pods of all namespaces. Only pods bound to a
    node (spec.nodeName) and not Succeeded/Failed hold anything. Tiers with the same nodeSelector and
    tolerations share a pool: the schedulable nodes matching the selector whose NoSchedule/NoExecute taints
    they tolerate. The last entry (total: true) is every node some workload of the platform can use (a
    tier's node, or an untainted one for the coordinator and the data services).

    free = allocatable - what pods of other namespaces request, per node (never below 0), summed. The pods of
    `namespace` itself are treated as replaced by the deploy and not subtracted - except agents missing from
    trading_agents and pods not deployed by sapphire-ops, which keep running. A rolling update of a
    Deployment still needs room for one extra pod at a time (maxSurge 1), which this does not reserve.
    Pods of other namespaces below the platform's priority classes could be preempted by the scheduler; this
    does not count on it (that would evict another team's work), so they hold what they request.

    Returns [{name, selector, tiers, total, nodes, resources: {resource: {allocatable, free, holders: {holder:
    amount}, node_free: [per node]}}}], amounts in base units (cores, bytes, devices, pods).
    """
    agent_names = {str(agent.get("name")) for agent in trading_agents or [] if isinstance(agent, dict)}
    held = _held_per_node(pods, namespace, agent_names)
    groups: dict[str, dict[str, Any]] = {}
    for tier_name, tier in sorted((agent_tiers or {}).items()):
        if not isinstance(tier, dict):
            continue
        selector, tolerations = _placement(tier)
        key = json.dumps([selector, tolerations], sort_keys=True)
        group = groups.setdefault(key, {"selector": selector, "tolerations": tolerations, "tiers": []})
        group["tiers"].append(tier_name)
    pools = []
    for group in groups.values():
        members = [node for node in nodes or [] if node_fits(node, group["selector"], group["tolerations"])]
        pools.append(_pool(_pool_name(members, group["selector"]), group["selector"], group["tiers"], members, held))
    usable = [node for node in nodes or []
              if node_fits(node, {}, []) or any(node_fits(node, group["selector"], group["tolerations"])
                                                for group in groups.values())]
    pools.append({**_pool(TOTAL_POOL, {}, sorted(agent_tiers or {}), usable, held), "total": True})
    return pools


def _usable(node_free: list[float], per_pod: list[int]) -> float:
    """Devices usable by whole pods: a pod's devices must all be on one node. Counted in steps of the
    greatest common divisor of the per-pod counts, so it never refuses what could fit."""
    step = 0
    for count in per_pod:
        step = math.gcd(step, int(count))
    if step <= 0:
        return float(sum(node_free))
    return float(sum(int(free // step) * step for free in node_free))


def capacity_rows(pools: list[dict[str, Any]], trading_agents: list[dict[str, Any]], agent_tiers: dict[str, Any],
                  workloads: list[dict[str, Any]] | None = None, scale_to_zero: bool = False) -> list[dict[str, Any]]:
    """Filter: rows {resource, pool, tiers, selector, nodes, needed, free, usable, allocatable, holders,
    accelerator, accelerated_pool, total, by_tier: [{tier, needed, agents}], ok}.

    pools: sapphire_free_capacity. Per pool: cpu, memory, pods and the tiers' accelerator resource that
    the agents of its tiers request; in total (the pool with total: true): cpu, memory and pods of the ensemble plus the
    other workloads (coordinator, in-cluster data services; rows of sapphire_workload_rows). A row is ok
    when needed <= usable (usable = free, or for accelerators what whole pods can use per node).
    accelerator: the row's resource is a tier's accelerator; accelerated_pool: the pool serves a tier with an
    accelerator (the accelerated role checks those pools, the namespace role the others and the total).
    """
    replicas: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for agent in trading_agents or []:
        count = 0 if scale_to_zero else int(agent.get("replicas", 1))
        replicas[agent["tier"]] = replicas.get(agent["tier"], 0) + count
        if count:
            members.setdefault(agent["tier"], []).append(str(agent["name"]))
    rows = []
    for pool in pools:
        if pool.get("total"):
            totals = ensemble_needs(trading_agents, agent_tiers, workloads, scale_to_zero)
            needs = {"cpu": Decimal(str(totals.get("requests.cpu", 0))),
                     "memory": Decimal(str(totals.get("requests.memory", 0))),
                     "pods": Decimal(str(totals.get("pods", 0)))}
            per_pod: dict[str, list[int]] = {}
            by_tier: dict[str, dict[str, Decimal]] = {}
        else:
            needs, per_pod, by_tier = {}, {}, {}
            for tier_name in pool["tiers"]:
                tier, count = agent_tiers[tier_name], Decimal(replicas.get(tier_name, 0))
                if not count:
                    continue
                tier_needs = {"cpu": count * parse_quantity(tier["cpu"]),
                              "memory": count * parse_quantity(tier["memory"]), "pods": count}
                accelerator = tier.get("accelerator")
                if accelerator:
                    tier_needs[accelerator["resource"]] = count * Decimal(int(accelerator["count"]))
                    per_pod.setdefault(accelerator["resource"], []).append(int(accelerator["count"]))
                for resource, amount in tier_needs.items():
                    _add(needs, resource, amount)
                    by_tier.setdefault(resource, {})[tier_name] = amount
        accelerated_pool = not pool.get("total") and any(
            isinstance(agent_tiers.get(tier_name), dict) and agent_tiers[tier_name].get("accelerator")
            for tier_name in pool["tiers"])
        for resource, needed in needs.items():
            if needed <= 0:
                continue
            offered = pool["resources"].get(resource) or {"allocatable": 0.0, "free": 0.0, "holders": {},
                                                          "node_free": []}
            usable = _usable(offered["node_free"], per_pod[resource]) if resource in per_pod else offered["free"]
            rows.append({"resource": resource, "pool": pool["name"], "tiers": pool["tiers"],
                         "selector": pool["selector"], "nodes": len(pool["nodes"]), "needed": float(needed),
                         "free": offered["free"], "usable": usable, "allocatable": offered["allocatable"],
                         "holders": offered["holders"], "accelerator": resource in per_pod,
                         "total": bool(pool.get("total")), "accelerated_pool": accelerated_pool,
                         "by_tier": [{"tier": tier, "needed": float(amount), "agents": members.get(tier, [])}
                                     for tier, amount in by_tier.get(resource, {}).items()],
                         "ok": float(needed) <= usable})
    return rows


def capacity_table(rows: list[dict[str, Any]]) -> str:
    """Filter: one line per row: verdict, resource and pool, needed, free, and who holds the rest, e.g.
    "SHORT google.com/tpu on pool tpu (tier accelerated): needed 8, free 4 (allocatable 8; held by other-ns 4)"."""
    lines = []
    for row in rows:
        resource = row["resource"]
        if row.get("total"):
            where = f"{resource} in total"
        else:
            tiers = row["tiers"]
            where = f"{resource} on pool {row['pool']} ({'tier' if len(tiers) == 1 else 'tiers'} {', '.join(tiers)})"
        detail = [f"allocatable {format_quantity(row['allocatable'], resource)}"]
        if not row["nodes"]:
            selector = ",".join(f"{key}={value}" for key, value in sorted(row["selector"].items()))
            detail.append(f"no schedulable node matches {selector or 'the tier'} and tolerates its taints")
        holders = list(row["holders"].items())
        if holders:
            shown = ", ".join(f"{holder} {format_quantity(amount, resource)}"
                              for holder, amount in holders[:_HOLDER_SHOWN])
            rest = holders[_HOLDER_SHOWN:]
            if rest:
                shown += (f" and {len(rest)} more namespace(s) "
                          f"{format_quantity(sum(amount for _, amount in rest), resource)}")
            detail.append(f"held by {shown}")
        free = f"free {format_quantity(row['free'], resource)}"
        if row["usable"] < row["free"]:
            free += f", of which whole pods can use {format_quantity(row['usable'], resource)}"
        lines.append(f"{'ok   ' if row['ok'] else 'SHORT'} {where}: needed {format_quantity(row['needed'], resource)}, "
                     f"{free} ({'; '.join(detail)})")
        if not row["ok"]:
            for part in row.get("by_tier") or []:
                names = part["agents"][:_HOLDER_SHOWN + 1]
                more = len(part["agents"]) - len(names)
                amount = format_quantity(part["needed"], resource)
                lines.append(f"      Tier '{part['tier']}' needs {amount} {resource} "
                             f"({', '.join(names)}{f' and {more} more' if more else ''})")
    return "\n".join(lines)


def _contains(wanted: Any, actual: Any) -> bool:
    """Whether every field of wanted is in actual with the same value (lists compared item by item)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(key in actual and _contains(value, actual[key])
                                                for key, value in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(actual, list) and len(wanted) == len(actual)
                and all(_contains(w, a) for w, a in zip(wanted, actual, strict=True)))
    return wanted == actual or str(wanted) == str(actual)


def unconverged(desired: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Filter: the desired objects that are missing, or whose fields (status aside) differ.

    Controllers (kwok, the PV binder, the deployment controller) keep writing status, so an apply
    of an unchanged object can still see a different object before and after; comparing only what
    the definition sets, before applying, keeps a converged cluster at changed=0 and spares one
    request pair per object. Objects are matched by kind, namespace and name. Fields a template
    stops setting are caught through the hash annotation of `with_applied_hash`.
    """
    def key(obj: dict[str, Any]) -> tuple[Any, Any, Any]:
        meta = obj.get("metadata") or {}
        return obj.get("kind"), meta.get("namespace"), meta.get("name")

    index = {key(obj): obj for obj in existing or []}
    result = []
    for obj in desired or []:
        current = index.get(key(obj))
        wanted = {name: value for name, value in obj.items() if name != "status"}
        if current is None or not _contains(wanted, current):
            result.append(obj)
    return result


def with_applied_hash(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Filter: each object annotated with sapphire.io/applied-hash, a digest of its definition.

    A field the template no longer sets is still on the live object, so `unconverged` alone would
    call the object converged; the digest changes with any change to the definition.
    """
    result = []
    for obj in objects or []:
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
        meta = dict(obj.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: digest}
        result.append({**obj, "metadata": meta})
    return result


def kinds(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Filter: the distinct apiVersion/kind pairs of a list of objects, in first-seen order."""
    seen: list[dict[str, str]] = []
    for obj in objects or []:
        pair = {"api_version": obj.get("apiVersion"), "kind": obj.get("kind")}
        if pair not in seen:
            seen.append(pair)
    return seen


def missing_packages(wanted: list[str], dpkg_lines: list[str]) -> list[str]:
    """Filter: the wanted packages that `dpkg-query --show --showformat='${Package} ${db:Status-Status}\\n'`
    does not list as installed (apt opens its whole cache to learn the same; this is the fast no-op path)."""
    installed = {line.split()[0].split(":")[0] for line in dpkg_lines or [] if line.split()[1:] == ["installed"]}
    return [name for name in wanted or [] if name not in installed]


class FilterModule:
    """sapphire-ops filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_quantity": quantity,
            "sapphire_is_quantity": is_quantity,
            "sapphire_format_quantity": format_quantity,
            "sapphire_labels": sapphire_labels,
            "sapphire_selector": sapphire_selector,
            "sapphire_pod_security_context": pod_security_context,
            "sapphire_container_security_context": container_security_context,
            "sapphire_missing_node_pools": missing_node_pools,
            "sapphire_default_storage_classes": default_storage_classes,
            "sapphire_stringify": stringify,
            "sapphire_pool_nodes": pool_nodes,
            "sapphire_accelerator_capacity": accelerator_capacity,
            "sapphire_tier_problems": tier_problems,
            "sapphire_ensemble_problems": ensemble_problems,
            "sapphire_ensemble_needs": ensemble_needs,
            "sapphire_workload_rows": workload_rows,
            "sapphire_quota_shortfalls": quota_shortfalls,
            "sapphire_needs_table": needs_table,
            "sapphire_node_capacity": node_capacity,
            "sapphire_not_ready_nodes": not_ready_nodes,
            "sapphire_node_fits": node_fits,
            "sapphire_free_capacity": free_capacity,
            "sapphire_capacity_rows": capacity_rows,
            "sapphire_capacity_table": capacity_table,
            "sapphire_unconverged": unconverged,
            "sapphire_with_applied_hash": with_applied_hash,
            "sapphire_kinds": kinds,
            "sapphire_missing_packages": missing_packages,
        }
