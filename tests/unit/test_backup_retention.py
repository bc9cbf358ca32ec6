"""Backup retention by backup id (module_utils/sapphire_backups.py, library/sapphire_backup_retention.py).

The layout is the one backup.yml writes: <root>/<component>/<id>/ with the component's files and a
manifest.json written last. Retention must work on whole backups, never delete the newest complete
one, never touch a directory without a manifest, and never leave half a backup behind.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.sapphire_backups import Backup, delete_backup, list_backups, retention_plan
from conftest import run_module

PG_FILES = ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest", "manifest.json")
NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def backup_id(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def make_backup(root: Path, component: str, days_ago: float, complete: bool = True) -> Path:
    path = root / component / backup_id(days_ago)
    path.mkdir(parents=True)
    for name in PG_FILES if component == "postgres" else ("dump.rdb", "manifest.json"):
        if name != "manifest.json" or complete:
            (path / name).write_bytes(b"x" * 16)
    # Copies and restores change mtimes: the age is the id, never the files' mtime.
    os.utime(path / ("base.tar.gz" if component == "postgres" else "dump.rdb"), (0, 0))
    return path


def decisions(plan: list[Backup]) -> dict[str, str]:
    return {f"{item.component}/{item.id}": item.action for item in plan}


@pytest.mark.parametrize(("ages", "expired"), [
    ([40], []),                      # the only backup, however old, is kept
    ([40, 45, 50], [45, 50]),        # the newest complete one stays even past the retention
    ([1, 20, 31, 60], [31, 60]),
    ([1, 2, 3], []),
])
def test_whole_backups_expire_by_id_never_the_newest_complete(ages: list[int], expired: list[int]) -> None:
    backups = [Backup("postgres", backup_id(age), f"/b/postgres/{backup_id(age)}", True) for age in ages]
    plan = retention_plan(backups, NOW.timestamp(), {"postgres": 30})
    assert sorted(item.id for item in plan if item.action == "expire") == sorted(backup_id(age) for age in expired)


def test_an_incomplete_backup_is_never_deleted_and_never_counts_as_the_newest() -> None:
    backups = [Backup("redis", backup_id(2), "/b/redis/new", False),   # running or failed: no manifest
               Backup("redis", backup_id(20), "/b/redis/old", True),
               Backup("redis", backup_id(90), "/b/redis/partial-old", False)]
    plan = {item.path: item for item in retention_plan(backups, NOW.timestamp(), {"redis": 7})}
    assert plan["/b/redis/old"].action == "keep"  # the newest *complete* backup
    assert plan["/b/redis/new"].action == "keep" and "incomplete" in plan["/b/redis/new"].why
    assert plan["/b/redis/partial-old"].action == "keep"


def test_components_have_their_own_retention() -> None:
    backups = [Backup(component, backup_id(age), f"/b/{component}/{age}", True)
               for component in ("postgres", "redis") for age in (1, 10)]
    plan = retention_plan(backups, NOW.timestamp(), {"postgres": 30, "redis": 7})
    assert [item.path for item in plan if item.action == "expire"] == ["/b/redis/10"]


def test_listing_reads_the_real_layout_and_ignores_foreign_names(tmp_path: Path) -> None:
    make_backup(tmp_path, "postgres", 40)
    make_backup(tmp_path, "postgres", 1, complete=False)
    (tmp_path / "postgres" / "notes").mkdir()
    (tmp_path / "postgres" / "20260101T000000Z.tar").write_text("x")
    leftover = tmp_path / "redis" / f".deleting-{backup_id(50)}"
    leftover.mkdir(parents=True)
    found, leftovers = list_backups(str(tmp_path), ["postgres", "redis", "missing"])
    assert [(item.id, item.complete) for item in found] == [(backup_id(40), True), (backup_id(1), False)]
    assert leftovers == [str(leftover)]


def test_deleting_a_backup_removes_all_of_it(tmp_path: Path) -> None:
    path = make_backup(tmp_path, "postgres", 40)
    delete_backup(str(path))
    assert list((tmp_path / "postgres").iterdir()) == []


def run(args: dict[str, Any], capsys: pytest.CaptureFixture[str], **flags: Any) -> dict[str, Any]:
    return run_module("sapphire_backup_retention", {**args, **flags}, capsys)


def test_module_reports_without_prune_and_deletes_whole_backups_with_it(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    only_old = make_backup(tmp_path, "postgres", 400)
    args = {"root": str(tmp_path), "components": ["postgres", "redis"], "retention_days": {"postgres": 30, "redis": 7}}
    result = run(args, capsys)
    assert result["expired"] == [] and not result["changed"]  # the only backup is the newest: kept
    older = make_backup(tmp_path, "postgres", 500)
    partial = make_backup(tmp_path, "postgres", 600, complete=False)
    result = run(args, capsys)
    assert result["expired"] == [str(older)] and not result["changed"] and older.exists()
    result = run(args, capsys, prune=True, _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] and older.exists()
    assert older.name in result["diff"]["before"]["postgres"] and older.name not in result["diff"]["after"]["postgres"]
    result = run(args, capsys, prune=True)
    assert result["changed"] and result["deleted"] == [str(older)]
    assert not older.exists() and only_old.exists() and partial.exists()
    assert sorted(path.name for path in only_old.iterdir()) == sorted(PG_FILES)
    assert not [path for path in (tmp_path / "postgres").iterdir() if path.name.startswith(".deleting-")]
    assert not run(args, capsys, prune=True)["changed"]


def test_module_finishes_an_interrupted_deletion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_backup(tmp_path, "redis", 1)
    leftover = tmp_path / "redis" / f".deleting-{backup_id(30)}"
    leftover.mkdir()
    (leftover / "dump.rdb").write_text("x")
    args = {"root": str(tmp_path), "components": ["redis"], "retention_days": {"redis": 7}, "prune": True}
    result = run(args, capsys)
    assert result["deleted"] == [str(leftover)] and not leftover.exists()


@pytest.mark.parametrize("days", [0, "x", True, None])
def test_module_refuses_a_bad_retention_naming_it(days: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = run({"root": str(tmp_path), "components": ["redis"], "retention_days": {"redis": days}}, capsys)
    assert result["failed"] and "retention_days.redis" in result["msg"]
