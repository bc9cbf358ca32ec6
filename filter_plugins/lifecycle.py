"""Controller-side filters of the lifecycle playbooks: cleanup, emergency stop / resume, rollback.

The decisions (what is stale, what a halt records, which release a rollback goes to) are pure
functions here, unit-tested in tests/unit/test_lifecycle_*.py; the playbooks only read the
cluster, call these, show the result and act on exactly that list.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from datetime import datetime
from typing import Any

from ansible.errors import AnsibleFilterError

MANAGED_BY = "sapphire-ops"
PART_OF = "sapphire"
HALTED_ANNOTATION = "sapphire.io/halted-replicas"
DATA_KINDS = ("PersistentVolumeClaim", "Secret")
AGENT_KINDS = ("Deployment", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: Any) -> float:
    """Filter: a retention ("90s", "36h", "7d", "2w" or a number of seconds) in seconds."""
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{value!r} is not a duration (examples: 3600, 36h, 7d, 2w)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise AnsibleFilterError(f"{value!r} is not a duration (examples: 3600, 36h, 7d, 2w)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise AnsibleFilterError(f"{value!r} is a negative duration")
    return seconds


def _epoch(timestamp: Any) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


def _ours(obj: dict[str, Any]) -> bool:
    labels = _labels(obj)
    return (labels.get("app.kubernetes.io/managed-by") == MANAGED_BY
            and labels.get("app.kubernetes.io/part-of") == PART_OF)


def _entry(obj: dict[str, Any], why: str) -> dict[str, Any]:
    meta = _meta(obj)
    return {"kind": obj.get("kind", ""), "api_version": obj.get("apiVersion", ""),
            "namespace": meta.get("namespace", ""), "name": meta.get("name", ""), "why": why}


def _job_finished(job: dict[str, Any]) -> tuple[str, float | None] | None:
    """('Complete'|'Failed', epoch of the transition) for a finished Job, None while it runs."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and str(condition.get("status")) == "True":
            when = _epoch(condition.get("lastTransitionTime")) or _epoch(status.get("completionTime"))
            return condition["type"], when
    return None


def _pod_failure(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    reason = status.get("reason") or "Failed"
    return "evicted pod" if reason == "Evicted" else f"failed pod ({reason})"


def cleanup_plan(objects: list[dict[str, Any]], wanted_agents: list[Any], now: float, job_retention: Any,
                 scope: str = "stale", include_data: bool = False, data_names: list[str] | None = None,
                 job_owners: list[str] | None = None) -> list[dict[str, Any]]:
    """Filter: what cleanup deletes from one namespace, each {kind, api_version, namespace, name, why}.

    objects: every object k8s_info returned (any kind). Only objects carrying the toolkit's labels
    (managed-by=sapphire-ops, part-of=sapphire) are ever candidates.
    scope 'stale': agent objects (Deployment, ConfigMap, PDB, HPA) whose sapphire.io/agent is no
    longer in wanted_agents, Jobs finished longer than job_retention ago, failed or evicted pods.
    scope 'teardown': every labelled object of the namespace.
    PersistentVolumeClaims and Secrets are only listed when include_data is true and their name is
    in data_names (cleanup_data_names), in either scope.
    """
    if scope not in ("stale", "teardown"):
        raise AnsibleFilterError(f"cleanup_scope must be stale or teardown, not {scope!r}")
    wanted = {agent["name"] if isinstance(agent, dict) else str(agent) for agent in wanted_agents or []}
    retention = duration_seconds(job_retention)
    named = set(data_names or [])
    plan: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects or []:
        if not _ours(obj):
            continue
        kind = obj.get("kind", "")
        meta = _meta(obj)
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        if key in seen or meta.get("deletionTimestamp"):
            continue
        why = None
        if kind in DATA_KINDS:
            if include_data and meta.get("name") in named:
                why = f"data, named in cleanup_data_names ({scope})"
        elif scope == "teardown":
            # Objects a controller owns (ReplicaSets' pods, Jobs' pods) go with their owner.
            if not meta.get("ownerReferences") or _pod_failure(obj):
                why = "teardown of the platform"
        elif kind in AGENT_KINDS and _labels(obj).get("sapphire.io/agent") and \
                _labels(obj).get("app.kubernetes.io/component") == "agent":
            agent = _labels(obj)["sapphire.io/agent"]
            if agent not in wanted:
                why = f"agent '{agent}' is no longer in trading_agents"
        elif kind == "Job":
            finished = _job_finished(obj)
            if finished and finished[1] is not None and now - finished[1] > retention:
                hours = (now - finished[1]) / 3600
                why = f"{finished[0].lower()} job, finished {hours:.1f} h ago (cleanup_job_retention {job_retention})"
        elif kind == "Pod":
            owners = {ref.get("name") for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Job"}
            failure = _pod_failure(obj)
            # A failed pod of a Job that is kept stays with its Job (its logs are the Job's record).
            if failure and not owners & set(job_owners or []):
                why = failure
        if why:
            seen.add(key)
            plan.append(_entry(obj, why))
    order = {kind: index for index, kind in enumerate(
        ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment", "StatefulSet", "Job", "Pod", "Service",
         "ConfigMap", "NetworkPolicy", "RoleBinding", "Role", "ServiceAccount", "ResourceQuota", "LimitRange"))}
    return sorted(plan, key=lambda item: (order.get(item["kind"], 50), item["namespace"], item["name"]))


def kept_data(objects: list[dict[str, Any]], include_data: bool = False,
              data_names: list[str] | None = None) -> list[str]:
    """Filter: 'Kind namespace/name' of the labelled data objects cleanup keeps."""
    named = set(data_names or []) if include_data else set()
    return sorted(f"{obj.get('kind')} {_meta(obj).get('namespace', '')}/{_meta(obj).get('name', '')}"
                  for obj in objects or [] if _ours(obj) and obj.get("kind") in DATA_KINDS
                  and _meta(obj).get("name") not in named)


# seed 001: 30 days for the database, 7 for Redis; the Kubernetes state (objects, releases, DR state) as the database
BACKUP_RETENTION_DAYS = {"postgres": 30, "redis": 7, "kubernetes": 30}


def backup_retention_days(overrides: Any = None) -> dict[str, int]:
    """Filter: days to keep each component's backups: the seed defaults with backup_retention_days over them.
    The one place the default lives; backup.yml passes the result to pgBackRest and the prune (filters/backups.py)."""
    if overrides in (None, ""):
        overrides = {}
    if not isinstance(overrides, dict):
        raise AnsibleFilterError(f"backup_retention_days must be a mapping of component to days, not {overrides!r}")
    merged: dict[str, int] = dict(BACKUP_RETENTION_DAYS)
    for component, days in overrides.items():
        if component not in BACKUP_RETENTION_DAYS:
            raise AnsibleFilterError(f"backup_retention_days.{component}: no such component "
                                     f"({', '.join(BACKUP_RETENTION_DAYS)})")
        if isinstance(days, bool) or not str(days).strip().isdigit() or int(str(days).strip()) < 1:
            raise AnsibleFilterError(f"backup_retention_days.{component} must be whole days >= 1, not {days!r}")
        merged[component] = int(str(days).strip())
    return merged


# Who backs up each component, by how its live primary is run (the topology's provider): the toolkit itself for data
# hosts and self-managed endpoints, an RDS snapshot for rds; any other provider keeps its own backups.
BACKED_UP_BY_TOOLKIT = {"postgres": {"host", "self_managed", "rds"}, "redis": {"host", "self_managed"}}
PROVIDERS_KEEPING_BACKUPS = {"postgres": {"cloudsql"}, "redis": {"elasticache", "memorystore"}}


def backup_provider_managed(components: list[str], providers: dict[str, Any]) -> dict[str, str]:
    """Filter: {component: provider} of the components to back up whose provider keeps the backups (cloudsql,
    elasticache, memorystore, ...): backup.yml reports them as not backed up by the toolkit instead of failing.
    A component with no live primary (provider '') is not listed: backup.yml refuses it as having nothing to back up."""
    kept = {}
    for component in components:
        provider = str((providers or {}).get(component) or "")
        if not provider or provider in BACKED_UP_BY_TOOLKIT.get(component, set()):
            continue
        if provider not in PROVIDERS_KEEPING_BACKUPS.get(component, set()):
            known = sorted(BACKED_UP_BY_TOOLKIT.get(component, set()) - {"host"}
                           | PROVIDERS_KEEPING_BACKUPS.get(component, set()))
            raise AnsibleFilterError(f"{component}_external_provider of the live {component} endpoint is "
                                     f"{provider!r}: set it to one of {', '.join(known)}. Nothing was backed up.")
        kept[component] = provider
    return kept


def backup_summary(reports: list[dict[str, Any]], backup_id: str, region: str, kept: dict[str, str]) -> list[str]:
    """Filter: one line per component of a backup run: what was taken and where it is (pgBackRest's label in each
    region's repository, the files' bytes and buckets, or the RDS snapshot and its copy) and what its provider keeps."""
    lines = []
    for report in reports or []:
        files = report.get("files") or []
        snapshot = report.get("snapshot") or {}
        repositories = report.get("repositories") or []
        if repositories:
            where = "pgBackRest " + ", ".join(
                f"{repo.get('label') or 'NO BACKUP'} ({repo.get('type', '?')}, {repo.get('repo_bytes', 0)} bytes "
                f"stored) in bucket {repo.get('bucket')}" for repo in repositories)
        elif files:
            size = sum(int(item.get("bytes") or 0) for item in files)
            buckets = report.get("buckets") or []
            where = (f"{size} bytes in {', '.join(buckets) or 'no bucket'} under {report.get('prefix', '?')}/"
                     if buckets else f"{size} bytes staged, not uploaded")
        else:
            copy = snapshot.get("copy_region") or "no other region"
            where = f"snapshot {snapshot.get('id', '?')}, copy in {copy}"
        lines.append(f"{report['component']} {backup_id} from {report.get('host')} ({report.get('role')}, lag "
                     f"{report.get('replication_lag_seconds')} s; live region {region}): {where}")
    for component, provider in sorted((kept or {}).items()):
        lines.append(f"{component}: NOT backed up by this toolkit: its provider ({provider}) keeps the backups, whose "
                     "schedule, retention and restore are the provider's")
    return lines


def plan_lines(plan: list[dict[str, Any]], verb: str = "DELETE") -> list[str]:
    """Filter: one readable line per planned deletion."""
    lines = []
    for item in plan or []:
        lines.append(f"{verb} {item['kind']} {item['namespace']}/{item['name']}: {item['why']}")
    return lines


def resume_scale(deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Filter: server-side apply patches (same field manager as the stop) that restore the recorded
    replica counts and drop the annotation. Deployments without a record are left alone."""
    patches = []
    for deployment in deployments or []:
        meta = _meta(deployment)
        recorded = (meta.get("annotations") or {}).get(HALTED_ANNOTATION)
        if recorded is None:
            continue
        try:
            replicas = int(recorded)
        except ValueError as exc:
            raise AnsibleFilterError(
                f"Deployment {meta.get('name')} has a bad {HALTED_ANNOTATION} annotation {recorded!r}; "
                "set it to the replica count to restore") from exc
        patches.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                        "spec": {"replicas": replicas}})
    return patches


def step_line(step: dict[str, Any]) -> str:
    """Filter: one line of the emergency-stop report."""
    status = str(step.get("status", "")).upper()
    return f"{status:<7} {step.get('step', ''):<12} {step.get('where', ''):<40} {step.get('msg', '')}"


def release_object_name(release: Any) -> str:
    """Filter: the ConfigMap name recording a release (sapphire-release-<release>, DNS-1123)."""
    text = re.sub(r"[^a-z0-9.-]+", "-", str(release).lower()).strip(".-")
    if not text:
        raise AnsibleFilterError(f"release {release!r} has no character usable in an object name")
    return ("sapphire-release-" + text)[:253]


def release_pointer(data: dict[str, Any] | None, release: Any) -> dict[str, str]:
    """Filter: the pointer ConfigMap's data after deploying `release`: current, previous, history (any other key, such
    as the canary outcomes, kept)."""
    data = data or {}
    release = str(release)
    history = json.loads(data.get("history") or "[]")
    current = data.get("current", "")
    if current == release:
        return {**data, "current": current, "previous": data.get("previous", ""), "history": json.dumps(history)}
    history = [item for item in history if item != release] + [release]
    return {**data, "current": release, "previous": current, "history": json.dumps(history)}


def rollback_target(data: dict[str, Any] | None, known: list[str], rollback_to: Any = "") -> str:
    """Filter: the release a rollback re-applies: rollback_to, or the pointer's previous release.
    Fails naming the recorded releases when the target does not exist."""
    data = data or {}
    releases = sorted({str(item) for item in known or []})
    target = str(rollback_to or data.get("previous") or "")
    listing = ", ".join(releases) if releases else "none (deploy.yml records one per deploy)"
    if not target:
        raise AnsibleFilterError(
            f"no previous release to roll back to (current: {data.get('current') or 'none'}); "
            f"set rollback_to to one of the recorded releases: {listing}")
    if target not in releases:
        raise AnsibleFilterError(
            f"release {target!r} is not recorded in this cluster; set rollback_to to one of: {listing}")
    return target


def rollback_pointer(data: dict[str, Any] | None, target: str) -> dict[str, str]:
    """Filter: the pointer after rolling back to target (previous becomes the release left)."""
    data = data or {}
    current = data.get("current", "")
    history = data.get("history") or json.dumps([target])
    if current == target:
        return {**data, "current": current, "previous": data.get("previous", ""), "history": history}
    return {**data, "current": target, "previous": current, "history": history}


def release_objects(objects: list[dict[str, Any]], halted: bool = False) -> list[dict[str, Any]]:
    """Filter: the recorded objects of a release as a rollback applies them; while the namespace is
    halted, agent Deployments stay at zero (resume restores the counts recorded by the stop)."""
    result = []
    for obj in objects or []:
        if halted and obj.get("kind") == "Deployment" and \
                _labels(obj).get("app.kubernetes.io/component") == "agent":
            obj = {**obj, "spec": {**(obj.get("spec") or {}), "replicas": 0}}
        result.append(obj)
    return result


def workload_images(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Filter: 'Kind/name' -> container images of every workload in a list of objects."""
    images = {}
    for obj in objects or []:
        template = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = template.get("containers") or []
        if containers:
            images[f"{obj.get('kind')}/{_meta(obj).get('name')}"] = [c.get("image", "") for c in containers]
    return images


def with_kind(pair: list[Any]) -> list[dict[str, Any]]:
    """Filter: [resources, [apiVersion, kind]] -> the resources with apiVersion and kind set (list
    responses leave them out of their items)."""
    resources, (api_version, kind) = pair[0] or [], pair[1]
    return [{**obj, "apiVersion": obj.get("apiVersion") or api_version, "kind": obj.get("kind") or kind}
            for obj in resources]


def metadata_only(objects: list[dict[str, Any]], api_version: str, kind: str) -> list[dict[str, Any]]:
    """Filter: objects reduced to apiVersion, kind and the metadata a decision needs (name, namespace,
    labels, ownerReferences, deletionTimestamp). Used on Secrets: their data, and annotations such
    as kubectl's last-applied-configuration that copy it, never leave the task that read them."""
    kept = ("name", "namespace", "labels", "ownerReferences", "deletionTimestamp", "uid")
    return [{"apiVersion": api_version, "kind": kind,
             "metadata": {key: value for key, value in _meta(obj).items() if key in kept}}
            for obj in objects or []]


def with_label(objects: list[dict[str, Any]], key: str, value: str, present: bool = True) -> list[dict[str, Any]]:
    """Filter: the objects whose label `key` equals `value` (present=false: the others). Label keys
    hold dots, which selectattr would read as a path."""
    return [obj for obj in objects or [] if (_labels(obj).get(key) == value) == present]


def redis_primary_endpoint(redis_hosts: list[dict[str, Any]], region: str = "primary") -> dict[str, Any]:
    """Filter: {host, port} of the region's primary Redis among redis_hosts' hostvars (the primary
    region's when the region has none), {} when there is none."""
    primaries = [host for host in redis_hosts or [] if host.get("redis_replication_role") == "primary"]
    ordered = [host for host in primaries if host.get("sapphire_region") == region] + primaries
    if not ordered:
        return {}
    entry = ordered[0]
    local = entry.get("ansible_connection", "ssh") == "local"
    host = entry.get("ansible_host") or ("127.0.0.1" if local else entry.get("inventory_hostname", ""))
    return {"host": host, "port": int(entry.get("redis_port", 6379))}


def pack_objects(objects: list[dict[str, Any]]) -> str:
    """Filter: a release's rendered objects as base64 of gzipped JSON, for a ConfigMap's binaryData.

    A ConfigMap holds at most 1 MiB; the plain JSON of a few hundred agents is larger, and it
    compresses about twentyfold. mtime=0 keeps the bytes identical for identical objects, so a
    re-deploy of the same release changes nothing.
    """
    raw = json.dumps(objects, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()


def unpack_objects(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter: the objects a release record ConfigMap holds (binaryData objects.json.gz, or the
    plain data objects.json of records written before releases were compressed)."""
    packed = (record.get("binaryData") or {}).get("objects.json.gz")
    if packed:
        return json.loads(gzip.decompress(base64.b64decode(packed)))
    plain = (record.get("data") or {}).get("objects.json")
    if plain is None:
        name = (record.get("metadata") or {}).get("name", "the release record")
        raise AnsibleFilterError(f"{name} holds neither binaryData objects.json.gz nor data objects.json")
    return json.loads(plain)


class FilterModule:
    """sapphire-ops lifecycle filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_duration_seconds": duration_seconds,
            "sapphire_cleanup_plan": cleanup_plan,
            "sapphire_kept_data": kept_data,
            "sapphire_backup_retention_days": backup_retention_days,
            "sapphire_backup_provider_managed": backup_provider_managed, "sapphire_backup_summary": backup_summary,
            "sapphire_plan_lines": plan_lines,
            "sapphire_resume_scale": resume_scale,
            "sapphire_release_object_name": release_object_name,
            "sapphire_release_pointer": release_pointer,
            "sapphire_rollback_target": rollback_target,
            "sapphire_rollback_pointer": rollback_pointer,
            "sapphire_release_objects": release_objects,
            "sapphire_pack_objects": pack_objects,
            "sapphire_unpack_objects": unpack_objects,
            "sapphire_workload_images": workload_images,
            "sapphire_redis_primary_endpoint": redis_primary_endpoint,
            "sapphire_with_label": with_label,
            "sapphire_with_kind": with_kind,
            "sapphire_metadata_only": metadata_only,
            "sapphire_step_line": step_line,
        }
