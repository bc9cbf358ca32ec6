"""Filters of backups in the object store (filter_plugins/backups.py): pgBackRest's info read per repository, a restore
target turned into pgBackRest's arguments, and the retention by backup id."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

_spec = importlib.util.spec_from_file_location("sapphire_backup_filters",
                                               Path(__file__).resolve().parents[2] / "filter_plugins" / "backups.py")
assert _spec and _spec.loader
backups = importlib.util.module_from_spec(_spec)
sys.modules["sapphire_backup_filters"] = backups
_spec.loader.exec_module(backups)

# `pgbackrest --output=json info` of the local default after one backup.yml run (two repositories, one full each).
INFO = json.loads((Path(__file__).parent / "data" / "pgbackrest-info.json").read_text())
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()


def backup_id(days_ago: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def test_the_newest_backup_of_each_repository_is_read_with_its_bucket() -> None:
    repos = backups.pgbackrest_newest(INFO, "sapphire", ["backups-primary", "backups-dr"])
    assert [(item["repo"], item["bucket"], item["label"], item["type"]) for item in repos] == [
        (1, "backups-primary", "20261205-113742F", "full"), (2, "backups-dr", "20261205-113744F", "full")]
    assert repos[0]["bytes"] == 31897381 and repos[0]["repo_bytes"] == 6203376
    assert repos[0]["stopped"] == "2026-12-05T11:37:43Z" and repos[0]["wal_start"] == "000000010000000000000005"
    assert repos[0]["status"] == "ok"


def test_a_repository_without_a_backup_is_reported_empty_never_borrowed_from_the_other() -> None:
    info = json.loads(json.dumps(INFO))
    info[0]["backup"] = [item for item in info[0]["backup"] if item["database"]["repo-key"] == 1]
    repos = backups.pgbackrest_newest(info, "sapphire", ["a", "b"])
    assert repos[1]["label"] == "" and repos[0]["label"] == "20261205-113742F"
    with pytest.raises(AnsibleFilterError, match="postgres_pgbackrest_stanza"):
        backups.pgbackrest_newest(INFO, "other", ["a"])


def test_restore_arguments_for_a_backup_set_and_for_a_point_in_time() -> None:
    assert backups.pgbackrest_restore_args("20261205-113742F", "", 2) == [
        "--repo=2", "--type=immediate", "--target-action=promote", "--set=20261205-113742F"]
    # PITR: UTC with microseconds; pgBackRest chooses the set when no label is given.
    assert backups.pgbackrest_restore_args("", "2026-12-05T13:11:12.5+02:00") == [
        "--repo=1", "--type=time", "--target=2026-12-05 11:11:12.500000+00", "--target-action=promote"]
    for bad, match in (("yesterday", "ISO 8601"), ("2026-12-05T10:00:00", "no time zone")):
        with pytest.raises(AnsibleFilterError, match=match):
            backups.pgbackrest_restore_args("", bad)


def test_only_ids_with_a_manifest_are_complete_backups() -> None:
    keys = ["backups/20261201T000000Z/manifest.json", "backups/20261202T000000Z/partial.json",
            "backups/notanid/manifest.json", "redis/20261203T000000Z/dump.rdb",
            "backups/20261130T000000Z/manifest.json"]
    assert backups.backup_ids(keys) == ["20261130T000000Z", "20261201T000000Z"]


def test_prune_removes_whole_expired_backups_and_never_the_newest_or_the_kept_one() -> None:
    ids = [backup_id(days) for days in (40, 35, 10, 8, 1)]
    plan = backups.backup_prune_plan(ids, {"postgres": 30, "redis": 7}, NOW)
    assert plan["expired"] == {"postgres": ids[:2], "redis": ids[:4]}
    assert plan["manifests"] == ids[:2]  # a manifest goes when every component's days passed
    assert plan["prefixes"][-2:] == [f"backups/{ids[0]}", f"backups/{ids[1]}"]  # manifests last
    assert f"redis/{ids[3]}" in plan["prefixes"] and f"redis/{ids[4]}" not in plan["prefixes"]
    # Backups stopped 40 days ago: the newest is kept however old, and the newest verified one too.
    old = [backup_id(days) for days in (60, 50, 40)]
    assert backups.backup_prune(old, 7, NOW)["expired"] == old[:2]
    assert backups.backup_prune(old, 7, NOW, keep=old[0])["expired"] == [old[1]]
    with pytest.raises(AnsibleFilterError, match="whole days"):
        backups.backup_prune(old, 0, NOW)
