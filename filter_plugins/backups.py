"""Filters for backups in the object store: what pgBackRest's `info` says about each repository, how a restore target
becomes pgBackRest arguments, which whole backups a prune removes, and what a backup of the Kubernetes state holds and
how it is restored.

Kept out of Jinja so each decision is a tested function (tests/unit/test_backup_filters.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ansible.errors import AnsibleFilterError

BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def _stanza(info: Any, stanza: str) -> dict[str, Any]:
    for item in info if isinstance(info, list) else []:
        if isinstance(item, dict) and item.get("name") == stanza:
            return item
    raise AnsibleFilterError(f"pgBackRest knows no stanza {stanza!r} (postgres_pgbackrest_stanza): run deploy.yml, "
                             "which creates it, before backup.yml")


def pgbackrest_newest(info: Any, stanza: str, buckets: list[str]) -> list[dict[str, Any]]:
    """Filter: the newest backup of each repository (repo1 first) from `pgbackrest --output=json info`:
    {repo, bucket, label, type, started, stopped (UTC ISO 8601), bytes (database size), repo_bytes (stored, compressed
    and encrypted), lsn_start, lsn_stop, wal_start, wal_stop, status}. A repository without a backup has label ''."""
    entry = _stanza(info, stanza)
    statuses = {int(repo.get("key", 0)): (repo.get("status") or {}).get("message", "")
                for repo in entry.get("repo") or []}
    result = []
    for key, bucket in enumerate(buckets, start=1):
        backups = [item for item in entry.get("backup") or []
                   if int(((item.get("database") or {}).get("repo-key")) or 1) == key]
        row: dict[str, Any] = {"repo": key, "bucket": bucket, "label": "", "status": statuses.get(key, "")}
        if backups:
            newest = max(backups, key=lambda item: (item.get("timestamp") or {}).get("stop", 0))
            stamp = newest.get("timestamp") or {}
            size = newest.get("info") or {}
            row.update(label=newest.get("label", ""), type=newest.get("type", ""),
                       started=_iso(stamp.get("start")), stopped=_iso(stamp.get("stop")),
                       bytes=int(size.get("size") or 0),
                       repo_bytes=int((size.get("repository") or {}).get("delta") or 0),
                       lsn_start=(newest.get("lsn") or {}).get("start", ""),
                       lsn_stop=(newest.get("lsn") or {}).get("stop", ""),
                       wal_start=(newest.get("archive") or {}).get("start", ""),
                       wal_stop=(newest.get("archive") or {}).get("stop", ""))
        result.append(row)
    return result


def _iso(epoch: Any) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else ""


def pgbackrest_restore_args(label: str, target_time: Any = "", repo: int = 1) -> list[str]:
    """Filter: the pgBackRest restore arguments for a backup `label` (its end: the consistent point after it, then
    promote) or, with `target_time`, a point in time (the last commit at or before it; the backup set chosen by
    pgBackRest among those that stopped before it, unless a label is given)."""
    args = [f"--repo={int(repo)}"]
    target = str(target_time or "").strip()
    if target:
        try:
            parsed = datetime.fromisoformat(target.replace("Z", "+00:00"))
        except ValueError as exc:
            raise AnsibleFilterError(f"restore_target_time must be an ISO 8601 time such as 2026-12-05T10:11:12Z, "
                                     f"not {target!r}") from exc
        if parsed.tzinfo is None:
            raise AnsibleFilterError(f"restore_target_time {target!r} has no time zone: add Z or +00:00")
        stamp = parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        args += ["--type=time", f"--target={stamp}", "--target-action=promote"]
    else:
        args += ["--type=immediate", "--target-action=promote"]
    if label:
        args.append(f"--set={label}")
    return args


def backup_ids(keys: list[str], prefix: str = "backups/") -> list[str]:
    """Filter: the backup ids whose manifest is in a listing of object keys (`<prefix><id>/manifest.json`), oldest
    first. A prefix without a manifest is not a complete backup and is not listed."""
    found = set()
    for key in keys or []:
        rest = str(key)[len(prefix):] if str(key).startswith(prefix) else ""
        backup_id, _, name = rest.partition("/")
        if name == "manifest.json" and BACKUP_ID.match(backup_id):
            found.add(backup_id)
    return sorted(found)


def backup_prune(ids: list[str], retention_days: int, now: float, keep: str = "") -> dict[str, list[str]]:
    """Filter: {expired, kept} among complete backup ids (`backup_ids`): a backup older than `retention_days` expires
    as a whole; the newest one is never expired, nor `keep` (the newest verified backup), however old."""
    days = int(retention_days)
    if days < 1:
        raise AnsibleFilterError(f"retention must be whole days >= 1, not {retention_days!r}")
    ordered = sorted(set(ids or []))
    protected = {ordered[-1]} if ordered else set()
    if keep:
        protected.add(str(keep))
    expired = []
    for backup_id in ordered:
        taken = datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        if backup_id not in protected and float(now) - taken > days * 86400:
            expired.append(backup_id)
    return {"expired": expired, "kept": [item for item in ordered if item not in expired]}


def backup_prune_plan(ids: list[str], retention: dict[str, Any], now: float, keep: str = "") -> dict[str, Any]:
    """Filter: what a prune removes, by backup id: {expired: {component: [ids]}, manifests: [ids], prefixes: [...]}.
    A component's objects (<component>/<id>) go when the id is older than that component's days; the manifest
    (backups/<id>) when every component's retention passed. `prefixes` lists the component prefixes first and the
    manifests last, so an interrupted prune never leaves a manifest naming objects that are gone."""
    if not isinstance(retention, dict) or not retention:
        raise AnsibleFilterError(f"retention must be a mapping of component to days, not {retention!r}")
    expired = {component: backup_prune(ids, days, now, keep)["expired"]
               for component, days in sorted(retention.items())}
    manifests = backup_prune(ids, max(int(days) for days in retention.values()), now, keep)["expired"]
    prefixes = [f"{component}/{backup_id}" for component, gone in expired.items() for backup_id in gone]
    return {"expired": expired, "manifests": manifests,
            "prefixes": prefixes + [f"backups/{backup_id}" for backup_id in manifests]}


# The Kubernetes state backup: the platform's objects as a restore would apply them. What the API server sets is left
# out (a restore must not carry another cluster's uids, versions or owners), and so are Secrets: their source is the
# vault, and deploy.yml writes them again; a bucket is not a second home for credentials.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                   "ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds")
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")
NEVER_BACKED_UP = {"Secret"}
# Workloads are not applied by a restore: they would start trading. deploy.yml (or rollback.yml) renders them again
# from the restored release record, under the halt guard.
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
APPLY_ORDER = {"Namespace": 0, "PriorityClass": 1, "ResourceQuota": 2, "LimitRange": 2, "ServiceAccount": 3,
               "Role": 3, "RoleBinding": 4}
KUBERNETES_BACKUP_FORMAT = 1


def _clean(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    metadata = {key: value for key, value in (obj.get("metadata") or {}).items() if key not in SERVER_METADATA}
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                   if key not in SERVER_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    clean = {key: value for key, value in obj.items() if key not in ("status", "metadata", "apiVersion", "kind")}
    if kind == "Service":  # addresses are the cluster's: a rebuilt cluster allocates its own
        clean["spec"] = {key: value for key, value in (clean.get("spec") or {}).items()
                         if key not in ("clusterIP", "clusterIPs")}
    if kind == "PersistentVolumeClaim":  # bound to a volume of this cluster
        clean["spec"] = {key: value for key, value in (clean.get("spec") or {}).items() if key != "volumeName"}
    return {"apiVersion": obj.get("apiVersion") or api_version, "kind": obj.get("kind") or kind,
            "metadata": metadata, **clean}


def k8s_backup(results: list[dict[str, Any]], state: Any) -> dict[str, Any]:
    """Filter: the Kubernetes state backup from registered kubernetes.core.k8s_info loop results (each with `item`:
    {api_version, kind}, as list items carry no kind) and the platform state: {format, state, objects}, the objects
    stripped of what the API server sets, Secrets left out, sorted by kind, namespace and name."""
    if not isinstance(state, dict) or "epoch" not in state:
        raise AnsibleFilterError(f"the platform state (sapphire_state_current) has no epoch: {state!r}")
    objects = []
    for result in results or []:
        item = result.get("item") or {}
        if result.get("failed") or not isinstance(item, dict):
            raise AnsibleFilterError(f"reading {item!r} failed: {result.get('msg', '')}")
        for obj in result.get("resources") or []:
            kind = obj.get("kind") or item.get("kind", "")
            if kind in NEVER_BACKED_UP:
                continue
            objects.append(_clean(obj, item.get("api_version", ""), kind))
    objects.sort(key=lambda obj: (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"].get("name", "")))
    return {"format": KUBERNETES_BACKUP_FORMAT, "state": state, "objects": objects}


def k8s_backup_summary(backup: Any) -> dict[str, Any]:
    """Filter: what a Kubernetes state backup holds, for its manifest and for the check after a restore: objects per
    kind, the release the pointer names as current, the recorded releases, the DR state's epoch and live region."""
    if not isinstance(backup, dict) or backup.get("format") != KUBERNETES_BACKUP_FORMAT:
        raise AnsibleFilterError("not a Kubernetes state backup of this toolkit (format "
                                 f"{KUBERNETES_BACKUP_FORMAT}): {str(backup)[:120]!r}")
    objects = backup.get("objects") or []
    kinds: dict[str, int] = {}
    for obj in objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    configmaps = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    pointer = next((obj for obj in configmaps if obj["metadata"].get("name") == "sapphire-releases"), {})
    releases = sorted(str((obj.get("data") or {}).get("release")) for obj in configmaps
                      if (obj.get("data") or {}).get("release") is not None
                      and obj["metadata"].get("name") != "sapphire-releases")
    state = backup.get("state") or {}
    return {"objects": len(objects), "kinds": dict(sorted(kinds.items())),
            "release": (pointer.get("data") or {}).get("current", ""), "releases": releases,
            "state_epoch": int(state.get("epoch", 0)), "live_region": state.get("live_region", "")}


def k8s_restore_plan(backup: Any, current_state: Any) -> dict[str, Any]:
    """Filter: what a live restore of a Kubernetes state backup does: {apply: the objects to apply (namespace, quotas
    and accounts first; no workload), workloads: 'Kind namespace/name' left to deploy.yml, state: the backup's platform
    state when its epoch is higher than the clusters' (they were rebuilt or lost it; else None: the newer state stays),
    state_reason}."""
    k8s_backup_summary(backup)  # refuses anything else
    objects = backup.get("objects") or []
    apply = sorted((obj for obj in objects if obj["kind"] not in WORKLOAD_KINDS),
                   key=lambda obj: APPLY_ORDER.get(obj["kind"], 5))
    workloads = [f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata'].get('name', '')}"
                 for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    saved = backup.get("state") or {}
    current = int((current_state or {}).get("epoch", 0))
    newer = int(saved.get("epoch", 0)) > current
    reason = (f"the backup's platform state (epoch {saved.get('epoch')}, live region {saved.get('live_region')}) is "
              f"newer than the clusters' (epoch {current}): restored" if newer else
              f"the clusters' platform state (epoch {current}) is as new as the backup's (epoch {saved.get('epoch')}) "
              "or newer: kept")
    return {"apply": apply, "workloads": workloads, "state": saved if newer else None, "state_reason": reason}


class FilterModule:
    """sapphire-ops backup filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_pgbackrest_newest": pgbackrest_newest,
            "sapphire_pgbackrest_restore_args": pgbackrest_restore_args,
            "sapphire_backup_ids": backup_ids,
            "sapphire_backup_prune": backup_prune,
            "sapphire_backup_prune_plan": backup_prune_plan,
            "sapphire_k8s_backup": k8s_backup,
            "sapphire_k8s_backup_summary": k8s_backup_summary,
            "sapphire_k8s_restore_plan": k8s_restore_plan,
        }
