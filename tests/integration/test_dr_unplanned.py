"""dr-failover.yml after an unplanned loss of the old PostgreSQL primary (SIGKILL of its postmaster).

The issue's words: "SIGKILL of the old primary with the synchronous option: 0 lost; async: loss measured and
reported". For each commit mode a throw-away pair of regions (test_dr.py's DataServers) takes a write load of
autocommit INSERTs on pg-primary; after a few hundred acknowledged commits the primary's postmaster is killed with
SIGKILL. Two outages, one per mode:
- sync (the synchronous option: remote_apply, min-replicas-to-write 1), the host lost with its disk (the data
  directory is gone): the old primary can be neither fenced nor measured, so the failover is refused until the
  operator declares the old region lost (-e dr_old_region_lost=true), then goes ahead; not one acknowledged commit
  is missing, and the report says honestly that the loss was not measured and the fence not verified;
- async, the server crashed on a host Ansible still reaches (its data directory intact): no declaration is needed -
  the old primary is fenced on its disk (standby.signal) and the end of its WAL is read by replaying it read-only,
  so the loss is measured in bytes and reported (a loss above zero needs dr_force), and agrees with the commits the
  load saw acknowledged and the promoted server lacks; restarted by hand it comes up read-only.
Either way: exactly one writable PostgreSQL, the old Redis a replica of the new one, and the promoted primary does
not wait for its fenced standby.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_dr import CONFIRM, DataServers, has_trade, in_recovery, insert_trade, pg_ctl, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]

# (test_dr's module-level skip already applies on import when postgresql-15 or redis-server is missing.)

ACKED_BEFORE_KILL = 300  # acknowledged commits before the SIGKILL
DISK_LOST = "data.disk-lost"  # where the sync outage moves the old primary's data directory (its disk is lost)


@pytest.fixture(scope="module", params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# The synchronous option as an operator turns it on: every commit acknowledged only once the other region replayed
# it, and a Redis master that refuses writes no replica receives.
SYNC = {"postgres_synchronous_commit_mode": "sync", "postgres_synchronous_commit": "remote_apply",
        "redis_min_replicas_to_write": 1}


@pytest.fixture(scope="module")
def servers(mode: str) -> Iterator[DataServers]:
    """The pair of regions, converged from nothing in the mode (sync: the synchronous option from the first run,
    which hung before the role's own commits stopped waiting for a standby seeded later in the same run)."""
    env = DataServers.start(f"sapphire-dr-{mode}-", variables=SYNC if mode == "sync" else None)
    try:
        yield env
    finally:
        try:
            forget_killed_postmaster(env)
        finally:
            env.stop()


@pytest.fixture(scope="module")
def run(servers: DataServers) -> dict[str, Any]:
    """What the first test of a mode did (the load, the kill, the playbook runs), for the tests after it (one per
    DataServers, hence per mode)."""
    return {"root": servers.root}


def postmaster_pid(servers: DataServers, host: str) -> int:
    return int((servers.pg_dir(host) / "data" / "postmaster.pid").read_text().splitlines()[0])


def runs_this_server(pid: int, data: Path) -> bool:
    """Whether pid is a live postgres process of this data directory (not a reused pid)."""
    try:
        return str(data) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def old_data(servers: DataServers) -> Path:
    """The old primary's data directory: where the role keeps it, or where the sync outage "lost" it."""
    data = servers.pg_dir("pg-primary") / "data"
    lost = data.with_name(DISK_LOST)
    return lost if lost.exists() else data


def forget_killed_postmaster(servers: DataServers) -> None:
    """After the SIGKILL the old primary's postmaster.pid names a dead process: remove it so that
    DataServers.stop() does not signal whatever process has reused that pid, and remove the killed server's
    System V shared memory segment once nothing is attached (its creator pid and key checked)."""
    data = old_data(servers)
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return
    pid = int(lines[0])
    if runs_this_server(pid, data):
        return  # still running: DataServers.stop() stops it
    (data / "postmaster.pid").unlink()
    key_and_id = lines[6].split() if len(lines) > 6 else []
    if len(key_and_id) != 2:
        return
    key, shmid = key_and_id
    try:
        table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    for row in table:
        fields = row.split()  # key shmid perms size cpid lpid nattch ...
        if fields[0] == key and fields[1] == shmid and fields[4] == str(pid) and fields[6] == "0":
            subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False, timeout=30)


def replication_state(servers: DataServers) -> tuple[str, str]:
    """(synchronous_standby_names, sync_state of the streaming standby) on pg-primary."""
    with servers.admin("pg-primary", "postgres") as conn:
        names = conn.execute("SHOW synchronous_standby_names").fetchone()[0]
        row = conn.execute("SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
    return names, row[0] if row else ""


def accepts_connections(servers: DataServers, host: str) -> bool:
    try:
        with servers.app(host) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


class CommitLoad:
    """Autocommit INSERTs into pg-primary as fast as it takes them, keeping every acknowledged order id, until the
    first error (the SIGKILL)."""

    def __init__(self, servers: DataServers) -> None:
        self.servers = servers
        self.acked: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        try:
            with self.servers.app("pg-primary") as conn:
                conn.autocommit = True
                while True:
                    order_id = f"unplanned-{uuid.uuid4().hex[:16]}"
                    insert_trade(conn, order_id)
                    self.acked.append(order_id)  # the commit returned: acknowledged
                    time.sleep(0.002)
        except psycopg.Error as exc:
            self.error = exc  # the primary is gone: nothing more is acknowledged


def report_of(servers: DataServers) -> dict[str, Any]:
    return json.loads(Path(servers.state()["history"][-1]["report"]).read_text())


def require_failover(run: dict[str, Any]) -> None:
    if not run.get("failed_over"):
        pytest.skip("the unplanned failover did not complete (see the first test of this mode)")


def test_sigkill_of_the_old_primary_then_failover(servers: DataServers, mode: str, run: dict[str, Any]) -> None:
    # The commit mode is in effect: sync waits for pg-dr's flush, async does not.
    expected = "sync" if mode == "sync" else "async"
    wait_for(lambda: replication_state(servers)[1] == expected, what=f"pg-dr streaming as a {expected} standby")
    names, _ = replication_state(servers)
    assert bool(names) == (mode == "sync"), f"{mode}: synchronous_standby_names = {names!r}"
    with servers.admin("pg-primary", "postgres") as conn:
        level = conn.execute("SHOW synchronous_commit").fetchone()[0]
    assert level == ("remote_apply" if mode == "sync" else "on"), level
    min_replicas = servers.redis("redis-primary").config_get("min-replicas-to-write")["min-replicas-to-write"]
    assert min_replicas == ("1" if mode == "sync" else "0"), min_replicas

    load = CommitLoad(servers)
    load.thread.start()
    wait_for(lambda: len(load.acked) >= ACKED_BEFORE_KILL or not load.thread.is_alive(), timeout=180,
             what=f"{ACKED_BEFORE_KILL} acknowledged commits")
    assert load.thread.is_alive(), f"the write load stopped early: {load.error!r}"
    pid = postmaster_pid(servers, "pg-primary")
    assert runs_this_server(pid, servers.pg_dir("pg-primary") / "data")
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    load.thread.join(timeout=60)
    assert not load.thread.is_alive(), "the write load still commits after the SIGKILL of the primary"
    run.update(acked=list(load.acked), killed_pid=pid, killed_at=killed_at)
    print(f"\n{mode}: {len(load.acked)} commits acknowledged before the SIGKILL (then: {load.error!r})")
    wait_for(lambda: not accepts_connections(servers, "pg-primary"), what="the killed primary gone")
    if mode == "sync":
        # The host is gone with its disk.
        data = servers.pg_dir("pg-primary") / "data"
        data.rename(data.with_name(DISK_LOST))
    else:
        # The crash leaves the data directory on a host Ansible reaches: no declaration needed.
        failover_of_a_crashed_primary(servers, run)


def failover_of_a_crashed_primary(servers: DataServers, run: dict[str, Any]) -> None:
    """The async outage: the first run fences the crashed primary on its disk and measures the loss; a loss above
    zero stops it before the promotion (dr_force accepts it), the second run goes ahead."""
    extra = {**CONFIRM, "dr_reason": "unplanned drill (async, crashed primary)", "dr_catchup_timeout": 5}
    first = servers.run("dr-failover.yml", extra_vars=extra)
    runs = [first]
    if first.rc != 0:
        messages = " ".join("\n".join(first.failure_messages()).split())
        assert "did not replay everything" in messages and "dr_force=true" in messages, first.explain()
        assert in_recovery(servers, "pg-dr"), "promoted although the loss was refused"
        runs.append(servers.run("dr-failover.yml", extra_vars={**extra, "dr_force": True}))
    assert runs[-1].rc == 0, runs[-1].explain()
    run.update(failed_over=True, report=report_of(servers), forced=len(runs) > 1)
    print(f"async: {'refused, then forced' if len(runs) > 1 else 'no loss'}; "
          f"{time.monotonic() - run['killed_at']:.1f} s from the SIGKILL to the promoted region")


def test_a_primary_that_cannot_be_fenced_needs_the_declaration(servers: DataServers, mode: str,
                                                               run: dict[str, Any]) -> None:
    if mode != "sync":
        pytest.skip("the async outage leaves the disk: the old primary is fenced on it without a declaration")
    assert "acked" in run, "the SIGKILL did not happen (see the first test of this mode)"
    # Not declared lost: refused before anything is written; nothing promoted.
    refused = servers.run("dr-failover.yml", extra_vars=CONFIRM)
    assert refused.rc != 0, "promoted although the old primary could be neither fenced nor measured"
    messages = " ".join("\n".join(refused.failure_messages()).split())
    assert "dr_old_region_lost=true" in messages and "PostgreSQL pg-primary" in messages, refused.explain()
    assert "refused before anything was changed" in messages, messages
    assert refused.changed == 0, refused.changed_tasks()
    assert servers.state() == {}
    assert in_recovery(servers, "pg-dr")
    assert servers.redis("redis-primary").get("sapphire:halt") is None
    assert servers.redis("redis-dr").info("replication")["role"] == "slave"

    # Declared lost: the failover goes ahead.
    result = servers.run("dr-failover.yml", extra_vars={**CONFIRM, "dr_old_region_lost": True,
                                                        "dr_reason": f"unplanned drill ({mode})"})
    assert result.rc == 0, result.explain()
    run["failed_over"] = True
    report = report_of(servers)
    run.update(report=report)
    lag = report["lag_at_switch"]["postgres"]
    print(f"{mode}: RPO gate saw PostgreSQL lag {lag['lag_seconds']} s ({lag['how']}) at about "
          f"{time.monotonic() - run['killed_at']:.1f} s after the SIGKILL; RTO {report['rto_seconds']} s")
    assert lag["lag_seconds"] is not None and lag["lag_seconds"] <= 300, lag
    assert report["old_region_lost"] is True and report["forced"] is False


def test_acknowledged_commits_on_the_promoted_server_and_the_loss_reported(
        servers: DataServers, mode: str, run: dict[str, Any]) -> None:
    require_failover(run)
    acked: list[str] = run["acked"]
    with servers.admin("pg-dr") as conn:
        found = {row[0] for row in conn.execute("SELECT order_id FROM trades WHERE order_id = ANY(%s)", (acked,))}
    missing = [order_id for order_id in acked if order_id not in found]
    report = run["report"]
    loss = report["loss"]["postgres"]
    print(f"\n{mode} unplanned failover: {len(missing)} of {len(acked)} acknowledged commits lost; the report: "
          f"{report['rpo']} (PostgreSQL loss {loss})")
    last = servers.state()["history"][-1]
    assert last["operation"] == "failover" and last["to"] == "dr" and last["rpo"] == report["rpo"]
    assert report["rto"].startswith("met") and report["rto_seconds"] > 0, report["rto"]
    markdown = Path(last["report"]).with_suffix(".md").read_text()
    if mode == "sync":
        assert missing == [], f"synchronous commit: {len(missing)} acknowledged commits lost: {missing[:5]}"
        # Declared lost: the report does not claim a measured loss.
        assert report["rpo"].startswith("not measured") and "old primary was not reached" in report["rpo"]
        assert loss["measured"] is False and report["fence_verified"] is False
        assert "PostgreSQL pg-primary" in report["not_fenced"], report["not_fenced"]
        assert not any("Redis" in item for item in report["not_fenced"]), report["not_fenced"]
        assert "fence verified: NO" in markdown and "PostgreSQL pg-primary" in markdown, markdown
    else:
        # Fenced on its disk and measured: the bytes the promoted server lacks, consistent with what the load saw.
        assert loss["measured"] is True and report["fence_verified"] is True and report["not_fenced"] == []
        assert (loss["bytes"] > 0) == run["forced"], (loss, run["forced"])
        if missing:
            assert loss["bytes"] > 0, f"{len(missing)} acknowledged commits missing but a loss of {loss}"
        fence = next(step for step in report["steps"] if step["step"] == "fence")
        assert "end of its own WAL" in fence["detail"]["postgres_last_lsn_from"], fence
        assert not report["rpo"].startswith("not measured"), report["rpo"]


def test_exactly_one_writable_postgres_and_the_reachable_old_redis_fenced(
        servers: DataServers, mode: str, run: dict[str, Any]) -> None:
    require_failover(run)
    assert not in_recovery(servers, "pg-dr")
    # The killed primary is not running, and cannot come back as a primary.
    data = old_data(servers)
    assert not runs_this_server(run["killed_pid"], data)
    assert not accepts_connections(servers, "pg-primary"), "the old primary accepts connections again"
    if mode == "async":
        assert (data / "standby.signal").exists(), "the crashed primary was not fenced on its disk"
        pg_ctl(servers, "pg-primary", "start")  # an operator restarts it by hand: it comes up read-only
        try:
            assert in_recovery(servers, "pg-primary")
        finally:
            pg_ctl(servers, "pg-primary", "stop")
    order_id = f"after-{mode}-{uuid.uuid4().hex[:12]}"
    with servers.app("pg-dr") as conn:
        insert_trade(conn, order_id)
    assert has_trade(servers, "pg-dr", order_id)
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT epoch, region, operation FROM sapphire_epoch").fetchone() == (1, "dr", "failover")

    # Redis: the old region's was reachable, so fenced: a replica of the promoted one.
    old_redis = servers.redis("redis-primary").info("replication")
    assert old_redis["role"] == "slave" and old_redis["master_port"] == servers.ports["redis-dr"], old_redis
    assert servers.redis("redis-dr").info("replication")["role"] == "master"
    assert servers.redis("redis-dr").get("sapphire:epoch") == "1"
    # The synchronous option survived the failover: suspended while redis-dr had no replica (else the epoch write
    # and the halt flag's removal would have been refused), restored once the old one followed it.
    new_redis = servers.redis("redis-dr")
    expected = "1" if mode == "sync" else "0"
    assert new_redis.config_get("min-replicas-to-write")["min-replicas-to-write"] == expected
    assert new_redis.info("replication")["connected_slaves"] >= 1
    new_redis.set(f"after-{mode}", "1")
    promote = next(step for step in run["report"]["steps"] if step["step"] == "promote")
    assert promote["detail"]["redis_min_replicas_to_write"] == ("restored" if mode == "sync" else "off"), promote
    state = servers.state()
    assert state["live_region"] == "dr" and state["epoch"] == 1
    assert state["host_overrides"]["redis-primary"] == {"redis_replication_role": "replica",
                                                        "redis_replica_of": "redis-dr"}


def test_the_promoted_primary_does_not_wait_for_its_fenced_standby(
        servers: DataServers, mode: str, run: dict[str, Any]) -> None:
    require_failover(run)
    with servers.admin("pg-dr", "postgres") as conn:
        assert conn.execute("SHOW synchronous_standby_names").fetchone()[0] == ""
    conf = (servers.pg_dir("pg-dr") / "conf" / "postgresql.conf").read_text()
    assert re.search(r"^synchronous_standby_names = ''$", conf, re.MULTILINE), "a restart would wait for pg-primary"
    # statement_timeout does not cover the wait for a synchronous standby (PostgreSQL disables it before the
    # commit), and a cancelled wait returns success with a WARNING: time the commit and catch that warning; a
    # client-side cancel after 15 s keeps a hang from hanging the test.
    notices: list[str] = []
    order_id = f"no-wait-{mode}-{uuid.uuid4().hex[:12]}"
    with servers.app("pg-dr") as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("SET statement_timeout = '5s'")
        timer = threading.Timer(15, conn.cancel)
        timer.start()
        started = time.monotonic()
        try:
            insert_trade(conn, order_id)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
    assert not any("synchronous replication" in notice for notice in notices), notices
    assert elapsed < 5, f"the commit on the promoted primary took {elapsed:.1f} s"
    assert has_trade(servers, "pg-dr", order_id)
