"""Controller-side filters shared by the roles: labels, security contexts, quantities.

Kept here once so every role renders the same labels and the same restricted-profile
security settings, and so capacity arithmetic (preflight) is done in Python, not Jinja.
"""

from __future__ import annotations

import hashlib
import json
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
            "sapphire_unconverged": unconverged,
            "sapphire_with_applied_hash": with_applied_hash,
            "sapphire_kinds": kinds,
            "sapphire_missing_packages": missing_packages,
        }
