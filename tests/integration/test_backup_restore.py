"""backup.yml and restore.yml on real servers of a throw-away inventory, with a real object store.

The same two-region data servers as test_dr.py (PostgreSQL primary + standby, Redis primary + replica, made by the
roles on free ports), plus this test's own S3 server (role backup_store: SeaweedFS, HTTPS, SSE-S3, versioned buckets
with object lock, one per region) and PostgreSQL archiving its WAL into it with pgBackRest. What an operator relies
on: a backup lands encrypted in every region's bucket with a manifest whose checksums match, and nothing of it stays
on the database host; it restores from the bucket into a scratch server with the row and key counts of the moment it
was taken (not of the live server later), the live servers untouched by that drill; a point-in-time restore returns
exactly what was committed before the time; a changed object in the bucket is refused; object lock refuses a delete;
a restore over a live instance is refused, before anything is written, unless confirm equals the inventory's
environment name, and then brings the data back; the retention removes only whole expired backups and only when
asked; the last success is recorded for the BackupStale alert; and no secret reaches the output even at -vvv.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest
from sapphire_testlib import local_vault
from test_dr import TABLES, DataServers, has_trade, in_recovery, insert_trade, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]

ROWS = {"trades": 7, "agent_decisions": 3, "signals": 2, "liquidations": 1, "whale_transactions": 0}
BUCKETS = {"primary": "sapphire-test-primary", "dr": "sapphire-test-dr"}


@pytest.fixture(scope="module")
def servers() -> Iterator[DataServers]:
    env = DataServers.start("sapphire-backup-", backup_store=True)
    try:
        yield env
    finally:
        env.stop()


def s3(servers: DataServers) -> Any:
    return servers.s3()


def keys(servers: DataServers, bucket: str, prefix: str) -> list[str]:
    return servers.s3_keys(bucket, prefix)


def manifest(servers: DataServers, backup_id: str, bucket: str = BUCKETS["primary"]) -> dict[str, Any]:
    body = s3(servers).get_object(Bucket=bucket, Key=f"backups/{backup_id}/manifest.json")["Body"].read()
    return json.loads(body)


def backup_ids(servers: DataServers) -> list[str]:
    return sorted(key.split("/")[1] for key in keys(servers, BUCKETS["primary"], "backups/")
                  if key.endswith("/manifest.json"))


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


def debug_messages(result: Any, task: str) -> Any:
    return next(iter(result.task_results(task).values()))["msg"]


@pytest.fixture(scope="module")
def first_backup(servers: DataServers) -> dict[str, Any]:
    seeded = seed_data(servers)
    started = time.time()
    result = servers.run("backup.yml", awx_job_id=1401)  # as an AWX job: its events are checked for secrets below
    assert result.rc == 0, result.explain()
    (backup_id,) = backup_ids(servers)
    return {"seeded": seeded, "started": started, "result": result, "id": backup_id}


BUCKET_CHECK = "backup_store : Read each region's bucket settings and name the buckets that differ"
BUCKET_SET = "backup_store : Ensure each region's bucket (versioning, SSE-S3, object lock)"
LIFECYCLE_SET = ("backup_store : Ensure deleted backups are purged once no lock holds them (non-current versions, "
                 "stale delete markers)")


def test_a_bucket_whose_settings_changed_is_set_again_and_only_that_bucket(servers: DataServers) -> None:
    """A converged object store is one read; a bucket that lost its encryption or its purge rule gets only what it
    lost set again, by amazon.aws.s3_bucket / community.aws.s3_lifecycle."""
    converge = "tests/integration/playbooks/backup_store.yml"
    quiet = servers.run(converge)
    assert quiet.rc == 0, quiet.explain()
    assert quiet.task_results(BUCKET_CHECK)["backup-store"]["differences"] == {}
    assert quiet.changed == 0, quiet.changed_tasks()
    client = s3(servers)
    client.delete_bucket_encryption(Bucket=BUCKETS["primary"])
    client.delete_bucket_lifecycle(Bucket=BUCKETS["dr"])
    repaired = servers.run(converge)
    assert repaired.rc == 0, repaired.explain()
    assert repaired.task_results(BUCKET_CHECK)["backup-store"]["differences"] == {
        BUCKETS["primary"]: ["encryption"], BUCKETS["dr"]: ["lifecycle"]}
    assert [item["backup_store_item"]["value"] for item in repaired.task_results(BUCKET_SET)["backup-store"]["results"]
            ] == [BUCKETS["primary"]]
    assert [item["backup_store_item"]["value"]
            for item in repaired.task_results(LIFECYCLE_SET)["backup-store"]["results"]] == [BUCKETS["dr"]]
    rules = client.get_bucket_encryption(Bucket=BUCKETS["primary"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    purge = client.get_bucket_lifecycle_configuration(Bucket=BUCKETS["dr"])["Rules"]
    assert [rule["ID"] for rule in purge] == ["purge-pruned-backups"]
    assert servers.run(converge).changed == 0


def test_backup_lands_encrypted_in_every_regions_bucket_with_a_manifest_whose_checksums_match(
        servers: DataServers, first_backup: dict[str, Any]) -> None:
    backup_id = first_backup["id"]
    found = manifest(servers, backup_id)
    assert found == manifest(servers, backup_id, BUCKETS["dr"]), "the DR region's bucket holds the same backup"
    postgres, redis_part = found["components"]["postgres"], found["components"]["redis"]
    assert postgres["host"] == "pg-primary" and postgres["role"] == "primary"
    assert postgres["rows_at_start"] == ROWS
    assert postgres["standbys"][0]["state"] == "streaming"
    assert found["retention_days"] == {"postgres": 30, "redis": 7, "kubernetes": 30}
    # Restored from the bucket into scratch servers and verified before the manifest was written.
    assert postgres["verified"] is True and found["components"]["redis"]["verified"] is True
    # pgBackRest: one backup set per region's repository, encrypted by the repository cipher.
    assert [repo["bucket"] for repo in postgres["repositories"]] == [BUCKETS["primary"], BUCKETS["dr"]]
    assert all(repo["label"].endswith("F") and repo["repo_bytes"] > 0 for repo in postgres["repositories"])
    client = s3(servers)
    for bucket in BUCKETS.values():
        info = client.get_object(Bucket=bucket, Key="pgbackrest/backup/sapphire/backup.info")["Body"].read()
        assert info.startswith(b"Salted__"), "the repository must be encrypted (repo cipher)"
        assert keys(servers, bucket, "pgbackrest/archive/sapphire/"), "the WAL archive is in every region"
    # Redis: each file in both buckets, encrypted at rest, its sha256 the manifest's.
    assert redis_part["keys_at_start"] == first_backup["seeded"]["keys"]
    assert {item["name"] for item in redis_part["files"]} >= {"dump.rdb"}
    for bucket in BUCKETS.values():
        for item in redis_part["files"]:
            stored = client.get_object(Bucket=bucket, Key=f"redis/{backup_id}/{item['name']}")
            assert stored["ServerSideEncryption"] == "AES256"
            assert hashlib.sha256(stored["Body"].read()).hexdigest() == item["sha256"]
            assert stored["Metadata"]["sha256"] == item["sha256"]
    # Nothing of the backup stays on the database host.
    staging = servers.local_dir / "backups"
    assert not [path for path in staging.rglob("*") if path.is_file()], "the staging copy must be removed"
    # Run as an AWX job: no event AWX stores of it, and nothing the inventory sync imported, holds a secret.
    assert first_backup["result"].job.leaked({**servers.secrets, **local_vault()}) == []


def test_backup_records_the_last_success_for_the_backup_stale_alert(servers: DataServers,
                                                                    first_backup: dict[str, Any]) -> None:
    client = servers.redis("redis-primary")
    for component in ("postgres", "redis"):
        record = client.hgetall(f"sapphire:backup:{component}")
        assert float(record["ts"]) >= int(first_backup["started"]), record
        assert record["id"] == first_backup["id"] and record["verified"] == "True"
        assert int(record["bytes"]) > 0


def test_scratch_restore_from_the_bucket_reproduces_the_backup_not_the_live_data(
        servers: DataServers, first_backup: dict[str, Any]) -> None:
    # Written after the backup: the restore must not show it, and must not touch the live servers.
    with servers.app("pg-primary") as conn:
        insert_trade(conn, "after-the-backup")
    servers.redis("redis-primary").set("sapphire:test:after", "1")
    result = servers.run("restore.yml")
    assert result.rc == 0, result.explain()
    reports = {item["component"]: item for item in debug_messages(result, "Show what was restored and verified")}
    assert reports["postgres"]["verified"] and reports["postgres"]["target"] == "scratch"
    assert reports["postgres"]["backup"] == first_backup["id"]
    assert reports["postgres"]["rows"] == ROWS
    assert reports["postgres"]["tables_present"] == len(TABLES)
    assert reports["postgres"]["newest_trade"]
    assert reports["redis"]["verified"]
    assert reports["redis"]["keys"] == first_backup["seeded"]["keys"]
    assert reports["redis"]["contract_keys"] >= 3
    with servers.app("pg-primary") as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == ROWS["trades"] + 1
    assert servers.redis("redis-primary").get("sapphire:test:after") == "1"
    assert not list((servers.local_dir / "backups").rglob("dump.rdb")), "the downloads must be removed"


def archived(servers: DataServers) -> None:
    """Close the current WAL segment and wait until pgBackRest archived it (into every repository)."""
    with servers.admin("pg-primary", "postgres") as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            last = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()[0]
            if last >= segment:
                return
            time.sleep(0.5)
    raise AssertionError(f"WAL segment {segment} was not archived in 120 s")


def commits_around_a_time(servers: DataServers, before: str, after: str) -> tuple[int, datetime, datetime]:
    """A trade before and one after a point in time, both archived: (trades before it, the newest one's time, the
    point in time)."""
    with servers.app("pg-primary") as conn:
        insert_trade(conn, before)
        count, newest = conn.execute("SELECT count(*), max(timestamp) FROM trades").fetchone()
    time.sleep(1.5)
    target = datetime.now(UTC)
    time.sleep(1.5)
    with servers.app("pg-primary") as conn:
        insert_trade(conn, after)
    archived(servers)
    return count, newest, target


def test_point_in_time_restore_returns_exactly_what_was_committed_before_the_time(
        servers: DataServers, first_backup: dict[str, Any]) -> None:
    first_count, first_newest, target = commits_around_a_time(servers, "pitr-first", "pitr-second")
    result = servers.run("restore.yml", extra_vars={"restore_target_time": target.isoformat(),
                                                    "restore_components": ["postgres"]})
    assert result.rc == 0, result.explain()
    (report,) = debug_messages(result, "Show what was restored and verified")
    assert report["verified"] and report["target_time"] == target.isoformat()
    assert report["rows"]["trades"] == first_count, "the trade after the target time must not be restored"
    assert datetime.fromisoformat(report["newest_trade"]) == first_newest


def test_a_changed_object_in_the_bucket_is_refused_at_restore(servers: DataServers,
                                                              first_backup: dict[str, Any]) -> None:
    client = s3(servers)
    key = f"redis/{first_backup['id']}/dump.rdb"
    original = client.get_object(Bucket=BUCKETS["primary"], Key=key)["Body"].read()
    tampered = original[:12] + b"XXXX" + original[16:]
    client.put_object(Bucket=BUCKETS["primary"], Key=key, Body=tampered)  # a new version: the lock allows it
    result = servers.run("restore.yml", extra_vars={"restore_backup": first_backup["id"],
                                                    "restore_components": ["redis"]})
    assert result.rc != 0
    messages = " ".join("\n".join(result.failure_messages()).split())
    assert "damaged or incomplete: dump.rdb" in messages, messages
    # The other region's copy is intact and restores.
    result = servers.run("restore.yml", extra_vars={"restore_backup": first_backup["id"], "restore_region": "dr",
                                                    "restore_components": ["redis"]})
    assert result.rc == 0, result.explain()
    client.put_object(Bucket=BUCKETS["primary"], Key=key, Body=original)


def test_object_lock_refuses_deleting_a_recent_backup(servers: DataServers, first_backup: dict[str, Any]) -> None:
    client = s3(servers)
    key = f"backups/{first_backup['id']}/manifest.json"
    version = client.head_object(Bucket=BUCKETS["primary"], Key=key)["VersionId"]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=BUCKETS["primary"], Key=key, VersionId=version)
    assert client.head_object(Bucket=BUCKETS["primary"], Key=key)["VersionId"] == version


def test_a_standby_source_is_refused_where_pgbackrest_backs_up_the_primary(servers: DataServers,
                                                                         first_backup: dict[str, Any]) -> None:
    result = servers.run("backup.yml", extra_vars={"backup_source": "standby"})
    assert result.rc != 0
    messages = " ".join("\n".join(result.failure_messages()).split())
    assert "backup_source is standby" in messages and "Nothing was written" in messages, messages
    assert result.changed == 0, result.changed_tasks()
    assert backup_ids(servers) == [first_backup["id"]]


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


def test_confirmed_live_postgres_point_in_time_restore_replays_the_wal_and_reseeds_the_standby(
        servers: DataServers, first_backup: dict[str, Any]) -> None:
    """pgBackRest over the live primary, to a time after the backup: the server replays the bucket's WAL up to it, the
    old data directory is kept, a standby seeded from it stays a standby (the restore's recovery target is not copied
    to it), and it follows the restored primary."""
    wanted, _, target = commits_around_a_time(servers, "before-the-target", "after-the-target")
    # The agent's positions in Redis count every trade, the one after the target time too (as a live writer's would).
    with servers.app("pg-primary") as conn:
        net, since, as_of = conn.execute(
            "SELECT sum(quantity)::float8, min(timestamp), max(timestamp) FROM trades WHERE agent_id = 'momentum' "
            "AND symbol = 'BTCUSDT' AND side = 'buy'").fetchone()
    servers.redis("redis-primary").hset("sapphire:positions:momentum", mapping={
        "BTCUSDT": f"{net:g}", "_since": since.isoformat(), "_as_of": as_of.isoformat()})
    result = servers.run("restore.yml", extra_vars={"restore_target": "live", "confirm": "test",
                                                    "restore_target_time": target.isoformat(),
                                                    "restore_components": ["postgres"]})
    assert result.rc == 0, result.explain()
    # PostgreSQL alone went back in time: the reconciliation names the agent and the symbol whose trade is gone.
    (positions,) = [item for item in debug_messages(result, "Show what was restored and verified")
                    if item.get("component") == "positions"]
    assert positions["status"] == "mismatch", positions
    assert positions["mismatches"] == [{"agent": "momentum", "symbol": "BTCUSDT", "redis": net, "trades": net - 1}]
    assert "agent momentum" in positions["detail"] and "BTCUSDT" in positions["detail"], positions
    with servers.app("pg-primary") as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == wanted, \
            "the live server must hold what was committed before the target time, not the later trade"
        insert_trade(conn, "after-the-restore")  # writable: out of recovery
    assert list(servers.pg_dir("pg-primary").glob("data.pre-restore-*")), "the old data directory must be kept"
    assert in_recovery(servers, "pg-dr"), "the standby is a standby of the restored primary"
    wait_for(lambda: has_trade(servers, "pg-dr", "after-the-restore"), what="the re-seeded standby replays")


def aged_copy(servers: DataServers, source_id: str, days: float, complete: bool = True) -> str:
    """A copy of a real backup's Redis objects and manifest under the id of `days` ago, in both buckets."""
    backup_id = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")
    client = s3(servers)
    for bucket in BUCKETS.values():
        for key in keys(servers, bucket, f"redis/{source_id}/"):
            client.copy_object(Bucket=bucket, Key=key.replace(source_id, backup_id),
                               CopySource={"Bucket": bucket, "Key": key})
        if complete:
            body = manifest(servers, source_id, bucket) | {"id": backup_id}
            client.put_object(Bucket=bucket, Key=f"backups/{backup_id}/manifest.json", Body=json.dumps(body))
    return backup_id


def test_retention_removes_only_whole_expired_backups_and_only_when_asked(servers: DataServers,
                                                                          first_backup: dict[str, Any]) -> None:
    expired = aged_copy(servers, first_backup["id"], 40)
    recent = aged_copy(servers, first_backup["id"], 3)  # within redis' 7 days
    incomplete = aged_copy(servers, first_backup["id"], 50, complete=False)  # no manifest: not a backup of ours
    # -vvv and plain output: the run that handles every secret prints none of them.
    result = servers.run("backup.yml", verbosity=3, json_output=False)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-5000:]
    for name, secret in servers.secrets.items():
        assert secret not in output, f"{name} printed by backup.yml at -vvv"
    assert keys(servers, BUCKETS["primary"], f"redis/{expired}/"), "an expired backup was deleted without backup_prune"
    said = " ".join(output.split())
    assert f"redis/{expired}, backups/{expired} expired; set backup_prune=true" in said, said[-3000:]

    result = servers.run("backup.yml", extra_vars={"backup_prune": True})
    assert result.rc == 0, result.explain()
    for bucket in BUCKETS.values():
        assert not keys(servers, bucket, f"redis/{expired}/") and not keys(servers, bucket, f"backups/{expired}/")
        assert keys(servers, bucket, f"redis/{recent}/") and keys(servers, bucket, f"backups/{recent}/")
        assert keys(servers, bucket, f"redis/{incomplete}/"), "objects without a manifest are not the toolkit's"
    assert first_backup["id"] in backup_ids(servers) and len(backup_ids(servers)) == 4  # 3 real backups + recent
