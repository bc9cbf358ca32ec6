"""Filters for backups in the object store: what pgBackRest's `info` says about each repository, how a restore target
becomes pgBackRest arguments, and which whole backups a prune removes.

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


class FilterModule:
    """sapphire-ops backup filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_pgbackrest_newest": pgbackrest_newest,
            "sapphire_pgbackrest_restore_args": pgbackrest_restore_args,
            "sapphire_backup_ids": backup_ids,
            "sapphire_backup_prune": backup_prune,
            "sapphire_backup_prune_plan": backup_prune_plan,
        }
