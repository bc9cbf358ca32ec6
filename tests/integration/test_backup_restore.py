"""backup.yml and restore.yml on real servers of a throw-away inventory.

The same two-region data servers as test_dr.py (PostgreSQL primary + standby, Redis primary +
replica, made by the roles on free ports). What an operator relies on: a backup restores into a
scratch server with the row and key counts of the moment it was taken (not of the live server
later), the live servers are untouched by that drill, a damaged backup is refused, a restore over
a live instance is refused, before anything is written, unless confirm equals the inventory's
environment name (the rule of every disruptive run) and then brings the data back, the
retention deletes only expired backups and only when asked, the last success is recorded for
the BackupStale alert, and no secret reaches the output even at -vvv.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dr import TABLES, DataServers, insert_trade

pytestmark = [pytest.mark.servers, pytest.mark.slow]

ROWS = {"trades": 7, "agent_decisions": 3, "signals": 2, "liquidations": 1, "whale_transactions": 0}


@pytest.fixture(scope="module")
def servers() -> Iterator[DataServers]:
    env = DataServers.start("sapphire-backup-")
    try:
        yield env
    finally:
        env.stop()


def seed_data(servers: DataServers) -> dict[str, Any]:
    with servers.app("pg-primary") as conn:
        for index in range(ROWS["trades"]):
            insert_trade(conn, f"bk-{index}-{uuid.uuid4().hex[:8]}")
        for _ in range(ROWS["agent_decisions"]):
            conn.execute("INSERT INTO agent_decisions (timestamp, agent_id, symbol, decision, confidence) "
                         "VALUES (now(), 'momentum', 'BTCUSDT', 'buy', 0.7)")
        for _ in range(ROWS["signals"]):
            conn.execute("INSERT INTO signals (timestamp, agent_id, symbol, signal, strength) "
                         "VALUES (now(), 'pairs', 'ETHUSDT', 'sell', 0.4)")
        conn.execute("INSERT INTO liquidations (timestamp, symbol, side, quantity, price) "
                     "VALUES (now(), 'BTCUSDT', 'long', 2, 49000)")
    client = servers.redis("redis-primary")
    for agent in ("momentum", "pairs", "breakout"):
        client.hset(f"sapphire:agent:{agent}:heartbeat", mapping={"ts": time.time(), "status": "running"})
    client.set("sapphire:test:plain", "1")
    return {"keys": client.dbsize()}


def backups(servers: DataServers, component: str) -> list[Path]:
    root = servers.local_dir / "backups" / component
    return sorted(path for path in root.iterdir() if (path / "manifest.json").exists()) if root.exists() else []


def debug_messages(result: Any, task: str) -> Any:
    return next(iter(result.task_results(task).values()))["msg"]


@pytest.fixture(scope="module")
def first_backup(servers: DataServers) -> dict[str, Any]:
    seeded = seed_data(servers)
    started = time.time()
    result = servers.run("backup.yml")
    assert result.rc == 0, result.explain()
    return {"seeded": seeded, "started": started, "result": result}


def test_backup_writes_a_manifest_with_checksums_and_counts(servers: DataServers,
                                                            first_backup: dict[str, Any]) -> None:
    (pg_backup,) = backups(servers, "postgres")
    manifest = json.loads((pg_backup / "manifest.json").read_text())
    assert manifest["host"] == "pg-primary" and manifest["role"] == "primary"
    assert manifest["rows_at_start"] == ROWS
    assert {item["name"] for item in manifest["files"]} >= {"base.tar.gz", "pg_wal.tar.gz"}
    assert all(len(item["sha256"]) == 64 and item["bytes"] > 0 for item in manifest["files"])
    assert manifest["standbys"][0]["state"] == "streaming"
    assert manifest["retention_days"] == 30
    (redis_backup,) = backups(servers, "redis")
    redis_manifest = json.loads((redis_backup / "manifest.json").read_text())
    assert redis_manifest["keys_at_start"] == first_backup["seeded"]["keys"]
    assert redis_manifest["retention_days"] == 7
    assert (redis_backup / "dump.rdb").stat().st_mode & 0o077 == 0, "backup files must be private"


def test_backup_records_the_last_success_for_the_backup_stale_alert(servers: DataServers,
                                                                    first_backup: dict[str, Any]) -> None:
    client = servers.redis("redis-primary")
    for component in ("postgres", "redis"):
        record = client.hgetall(f"sapphire:backup:{component}")
        assert float(record["ts"]) >= int(first_backup["started"]), record
        assert record["id"] == backups(servers, component)[-1].name
        assert int(record["bytes"]) > 0


def test_scratch_restore_reproduces_the_backup_not_the_live_data(servers: DataServers,
                                                                 first_backup: dict[str, Any]) -> None:
    # Written after the backup: the restore must not show it, and must not touch the live servers.
    with servers.app("pg-primary") as conn:
        insert_trade(conn, "after-the-backup")
    servers.redis("redis-primary").set("sapphire:test:after", "1")
    result = servers.run("restore.yml")
    assert result.rc == 0, result.explain()
    reports = {item["component"]: item for item in debug_messages(result, "Show what was restored and verified")}
    assert reports["postgres"]["verified"] and reports["postgres"]["target"] == "scratch"
    assert reports["postgres"]["rows"] == ROWS
    assert reports["postgres"]["tables_present"] == len(TABLES)
    assert reports["postgres"]["newest_trade"]
    assert reports["redis"]["verified"]
    assert reports["redis"]["keys"] == first_backup["seeded"]["keys"]
    assert reports["redis"]["contract_keys"] >= 3
    with servers.app("pg-primary") as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == ROWS["trades"] + 1
    assert servers.redis("redis-primary").get("sapphire:test:after") == "1"
    assert not list(Path("/tmp").glob(f"sapphire-restore-*/data/base*{servers.root.name}*"))


def test_a_damaged_backup_is_refused(servers: DataServers, first_backup: dict[str, Any]) -> None:
    source = backups(servers, "redis")[-1]
    damaged = source.parent / "20200101T000000Z"
    shutil.copytree(source, damaged)
    try:
        with (damaged / "dump.rdb").open("r+b") as handle:
            handle.seek(12)
            handle.write(b"XXXX")
        result = servers.run("restore.yml", extra_vars={"restore_backup": damaged.name,
                                                        "restore_components": ["redis"]})
        assert result.rc != 0
        assert "damaged or incomplete: dump.rdb" in "\n".join(result.failure_messages())
    finally:
        shutil.rmtree(damaged)


def test_restore_over_live_is_refused_without_confirm(servers: DataServers, first_backup: dict[str, Any]) -> None:
    before = (servers.local_dir / "redis" / "redis-primary" / "data").stat().st_ino
    pg_before = (servers.pg_dir("pg-primary") / "data").stat().st_ino
    # No confirm; an instance name (what restore_confirm used to take); another environment's name.
    for extra in ({"restore_target": "live"},
                  {"restore_target": "live", "confirm": "redis-primary", "restore_components": ["redis"]},
                  {"restore_target": "live", "confirm": "prod"}):
        result = servers.run("restore.yml", extra_vars=extra)
        assert result.rc != 0, extra
        messages = " ".join("\n".join(result.failure_messages()).split())
        assert "Nothing was written" in messages and "-e confirm=test" in messages, messages
        assert "overwrites the live" in messages and "redis-primary" in messages, messages
        given = "confirm is unset" if "confirm" not in extra else f"confirm is '{extra['confirm']}'"
        assert given in messages, messages
        assert result.changed == 0, result.changed_tasks()
    assert (servers.local_dir / "redis" / "redis-primary" / "data").stat().st_ino == before
    assert (servers.pg_dir("pg-primary") / "data").stat().st_ino == pg_before
    assert not list(servers.pg_dir("pg-primary").glob("data.pre-restore-*"))
    assert servers.redis("redis-primary").get("sapphire:test:after") == "1"


def test_confirmed_live_restore_brings_the_backup_back_and_keeps_the_old_data(
        servers: DataServers, first_backup: dict[str, Any]) -> None:
    result = servers.run("restore.yml", extra_vars={"restore_target": "live", "confirm": "test",
                                                    "restore_components": ["redis"]})
    assert result.rc == 0, result.explain()
    client = servers.redis("redis-primary")
    assert client.get("sapphire:test:after") is None, "the live data was not replaced by the backup"
    assert client.hget("sapphire:agent:momentum:heartbeat", "status") == "running"
    kept = list((servers.local_dir / "redis" / "redis-primary").glob("data.pre-restore-*"))
    assert kept and (kept[0] / "dump.rdb").exists()
    # The replica follows the restored primary.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and servers.redis("redis-dr").exists("sapphire:test:after"):
        time.sleep(0.5)
    assert not servers.redis("redis-dr").exists("sapphire:test:after")


def test_retention_deletes_only_expired_backups_and_only_when_asked(servers: DataServers,
                                                                    first_backup: dict[str, Any]) -> None:
    root = servers.local_dir / "backups" / "redis"
    expired = root / "20200101T000000Z"
    shutil.copytree(backups(servers, "redis")[-1], expired)
    foreign = root / "20190101T000000Z"  # no manifest: not a backup this toolkit made
    foreign.mkdir()
    # -vvv and plain output: the run that handles every secret prints none of them.
    result = servers.run("backup.yml", verbosity=3, json_output=False)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-5000:]
    for name, secret in servers.secrets.items():
        assert secret not in output, f"{name} printed by backup.yml at -vvv"
    assert expired.exists(), "an expired backup was deleted without backup_prune"
    assert f"{expired} expired; set backup_prune=true to delete them" in " ".join(output.split())

    result = servers.run("backup.yml", extra_vars={"backup_prune": True})
    assert result.rc == 0, result.explain()
    assert not expired.exists()
    assert foreign.exists()
    assert len(backups(servers, "redis")) == 3  # first backup and the two of this test, all within 7 days
    assert len(backups(servers, "postgres")) == 3


def aged_copy(source: Path, root: Path, days: float, complete: bool = True) -> Path:
    """A copy of a real backup made by backup.yml under another backup root, with the id of `days` ago."""
    from datetime import UTC, datetime, timedelta

    backup_id = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")
    target = root / source.parent.name / backup_id
    shutil.copytree(source, target)
    aged = time.time() - days * 86400
    for path in target.iterdir():  # the files aged too, as the old per-file retention read them
        os.utime(path, (aged, aged))
    if not complete:
        (target / "manifest.json").unlink()
    return target


def test_cleanup_retention_works_on_whole_backups_of_the_real_layout(servers: DataServers,
                                                                     first_backup: dict[str, Any]) -> None:
    """cleanup.yml and backup.yml share one retention by backup id: the only backup is kept however old,
    an expired one goes whole (no base.tar.gz removed from under its manifest), one without a manifest stays."""
    source = backups(servers, "postgres")[-1]
    assert {path.name for path in source.iterdir()} >= {"base.tar.gz", "pg_wal.tar.gz", "manifest.json"}
    root = servers.root / "aged-backups"
    only = aged_copy(source, root, 40)
    run_vars = {"backup_dir": str(root), "cleanup_dry_run": False, "confirm": "test"}

    dry = servers.run("cleanup.yml", extra_vars={"backup_dir": str(root)}, check=True)
    assert dry.rc == 0, dry.explain()
    assert "WOULD DELETE" not in dry.stdout, "the only backup there is must never be listed for deletion"
    result = servers.run("cleanup.yml", extra_vars=run_vars)
    assert result.rc == 0, result.explain()
    assert sorted(path.name for path in only.iterdir()) == sorted(path.name for path in source.iterdir())

    older = aged_copy(source, root, 45)
    partial = aged_copy(source, root, 50, complete=False)
    dry = servers.run("cleanup.yml", extra_vars={"backup_dir": str(root)})
    assert dry.rc == 0, dry.explain()
    assert f"WOULD DELETE backup {older} (whole backup)" in dry.stdout
    assert "base.tar.gz" not in dry.stdout and older.exists()
    result = servers.run("cleanup.yml", extra_vars=run_vars)
    assert result.rc == 0, result.explain()
    assert not older.exists(), "an expired backup must go, whole"
    assert only.exists() and (only / "base.tar.gz").exists() and (only / "manifest.json").exists()
    assert partial.exists(), "a directory without a manifest is not the toolkit's to delete"
    assert sorted(path.name for path in (root / "postgres").iterdir()) == sorted([only.name, partial.name])
    again = servers.run("cleanup.yml", extra_vars=run_vars)
    assert again.rc == 0 and again.changed == 0, again.explain()
