"""Backup retention by backup id: which whole backups expire, and deleting one without leaving half of it.

A backup is a directory named by its id, the UTC time it started (20261121T010203Z), under
<backup root>/<component>/. It is complete when its manifest.json exists: backup.yml writes the
manifest last, after the files were checked. Retention works on whole backups:
- a complete backup older than the component's retention expires,
- the newest complete backup of a component never expires, whatever its age,
- a directory without a manifest (a backup still running, a failed one, or one the toolkit did not
  make) is reported and never deleted,
- an expired backup is first renamed out of the id namespace (.deleting-<id>, one atomic rename),
  then removed: an interrupted deletion leaves no directory that looks like a backup, and the next
  run finishes it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

BACKUP_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
TRASH_PREFIX = ".deleting-"
MANIFEST = "manifest.json"


@dataclass
class Backup:
    component: str
    id: str
    path: str
    complete: bool
    age_days: float = 0.0
    action: str = "keep"
    why: str = ""


def backup_id_epoch(backup_id: str) -> float:
    """Seconds since the epoch of a backup id (its UTC start time)."""
    # timezone.utc, not datetime.UTC: modules also run on managed hosts with Pythons before 3.11.
    return datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()  # noqa: UP017


def retention_plan(backups: list[Backup], now: float, retention_days: dict[str, int]) -> list[Backup]:
    """Decide keep or expire for every backup, per component; returns them oldest first."""
    result: list[Backup] = []
    for component in sorted({item.component for item in backups}):
        limit = int(retention_days[component])
        mine = sorted((item for item in backups if item.component == component), key=lambda item: item.id)
        complete = [item for item in mine if item.complete]
        newest = complete[-1].id if complete else None
        for item in mine:
            age = (now - backup_id_epoch(item.id)) / 86400
            decided = Backup(component, item.id, item.path, item.complete, round(age, 2))
            if not item.complete:
                decided.why = f"incomplete (no {MANIFEST}): never deleted by retention"
            elif item.id == newest:
                decided.why = "the newest complete backup: always kept"
            elif age > limit:
                decided.action = "expire"
                decided.why = f"{age:.1f} days old, retention {limit} days"
            else:
                decided.why = f"{age:.1f} days old, within the retention of {limit} days"
            result.append(decided)
    return result


def list_backups(root: str, components: list[str]) -> tuple[list[Backup], list[str]]:
    """The backup directories under root/<component>/ and the leftovers of interrupted deletions."""
    found: list[Backup] = []
    leftovers: list[str] = []
    for component in components:
        directory = os.path.join(root, component)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not os.path.isdir(path) or os.path.islink(path):
                continue
            if name.startswith(TRASH_PREFIX) and BACKUP_ID.match(name[len(TRASH_PREFIX):]):
                leftovers.append(path)
            elif BACKUP_ID.match(name):
                found.append(Backup(component, name, path, os.path.isfile(os.path.join(path, MANIFEST))))
    return found, leftovers


def delete_backup(path: str) -> None:
    """Remove a whole backup: one rename out of the id namespace, then the tree (a leftover of an
    interrupted deletion, already renamed, is only removed)."""
    parent, name = os.path.split(path.rstrip("/"))
    trash = path
    if not name.startswith(TRASH_PREFIX):
        trash = os.path.join(parent, TRASH_PREFIX + name)
        os.rename(path, trash)
    shutil.rmtree(trash)


def as_dicts(backups: list[Backup]) -> list[dict[str, Any]]:
    return [asdict(item) for item in backups]
