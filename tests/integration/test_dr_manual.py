"""dr-failover.yml with managed data services no Ansible module promotes (postgres_external_provider cloudsql,
redis_external_provider memorystore): the manual mode, walked the way an operator does it.

The servers are test_dr.DataServers declared as the two regions' endpoints (test_dr_self_managed.ExternalRegions, the
platform state in a file); the test plays the provider where the operator would click (pg_promote, REPLICAOF NO ONE).
- a first run fences the old region, measures the catch-up and stops, naming what to promote where and how to go on;
- a run that says the servers were promoted before they were is refused, naming the server, with the region fenced;
- a run without the confirmation after the promotion stops the same way (the operator's word is what it waits for);
- with the servers promoted and -e dr_promoted_in_provider=true: the application writes to the new PostgreSQL, the
  epoch is in both stores, the loss is measured from where the provider's promotion forked them, the old Redis is
  reported as fenced by its halt flag only (a managed Redis cannot be made to follow), and a second run changes
  nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dr import in_recovery, wait_for
from test_dr_self_managed import ExternalRegions, app_can_write

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CONFIRM = {"confirm": "test"}
PROMOTED = {**CONFIRM, "dr_promoted_in_provider": True}


@pytest.fixture(scope="module")
def regions() -> Iterator[ExternalRegions]:
    env = ExternalRegions.start("sapphire-dr-manual-", providers=("cloudsql", "memorystore"))
    yield env
    env.servers.stop()


def settled(servers: Any) -> bool:
    """The fenced primary's WAL position did not move for 16 s (its last standby snapshot is written within 15 s of
    any WAL) and the replica replayed it."""
    with servers.admin("pg-primary", "postgres") as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    time.sleep(16)
    with servers.admin("pg-primary", "postgres") as conn:
        after = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    with servers.admin("pg-dr", "postgres") as conn:
        replayed = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (after,)).fetchone()[0]
    return before == after and bool(replayed)


def messages(result: Any) -> str:
    return " ".join(" ".join(result.failure_messages()).split())


def test_the_first_run_fences_measures_and_says_what_to_promote_where(regions: ExternalRegions) -> None:
    servers = regions.servers
    with servers.app("pg-primary") as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, 'manual-before')")
    result = regions.run("dr-failover.yml", extra_vars=CONFIRM)
    assert result.rc != 0
    said = messages(result)
    assert f"PostgreSQL pg-west (127.0.0.1:{servers.ports['pg-dr']}, region dr) in cloudsql: promote the" in said, said
    assert "Redis redis-west" in said and "in memorystore" in said and "dr_promoted_in_provider=true" in said, said
    assert "'measured': True, 'bytes': 0" in said or "'bytes': 0, 'measured': True" in said, said
    # Fenced, nothing promoted, nothing recorded.
    assert not app_can_write(servers, "pg-primary")
    assert json.loads(servers.redis("redis-primary").get("sapphire:halt"))["actor"] == "dr-failover"
    assert in_recovery(servers, "pg-dr") and servers.redis("redis-dr").info("replication")["role"] == "slave"
    assert regions.state().get("live_region", "primary") == "primary"


def test_saying_promoted_before_it_is_is_refused_naming_the_server(regions: ExternalRegions) -> None:
    result = regions.run("dr-failover.yml", extra_vars=PROMOTED)
    assert result.rc != 0
    said = messages(result)
    assert "pg-west" in said and "not as a primary: it was not promoted in cloudsql yet" in said, said
    assert in_recovery(regions.servers, "pg-dr") and regions.state().get("live_region", "primary") == "primary"


def test_after_the_provider_promoted_the_confirmation_switches_the_platform(regions: ExternalRegions) -> None:
    servers = regions.servers
    # A careful operator promotes once the replica has everything: the fenced primary writes a last standby snapshot
    # record some seconds after the fence, then nothing (its application login and writes are gone).
    wait_for(lambda: settled(servers), timeout=120, what="the fenced primary quiet and replayed")
    # The provider's part (what gcloud sql instances promote-replica and a Memorystore failover do).
    with servers.admin("pg-dr", "postgres") as conn:
        conn.execute("SELECT pg_promote(true, 60)")
    servers.redis("redis-dr").replicaof("no", "one")

    waiting = regions.run("dr-failover.yml", extra_vars=CONFIRM)
    assert waiting.rc != 0 and "dr_promoted_in_provider=true" in messages(waiting)

    result = regions.run("dr-failover.yml", extra_vars={**PROMOTED, "dr_reason": "managed drill"})
    assert result.rc == 0, result.explain()
    assert app_can_write(servers, "pg-dr") and not app_can_write(servers, "pg-primary")
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT count(*) FROM trades WHERE order_id = 'manual-before'").fetchone()[0] == 1
        assert conn.execute("SELECT epoch, region FROM sapphire_epoch").fetchone() == (1, "dr")
    assert servers.redis("redis-dr").get("sapphire:epoch") == "1"
    assert servers.redis("redis-dr").get("sapphire:halt") is None
    state = regions.state()
    assert state["live_region"] == "dr" and state["epoch"] == 1
    report = json.loads(Path(state["history"][-1]["report"]).read_text())
    # Measured where the provider's promotion forked the new servers from the fenced old ones: 0 bytes, or - when
    # the fenced server wrote its housekeeping (a timed checkpoint) after the promotion - said to be unknown.
    assert report["rpo"] == "met: 0 bytes lost (measured)" or (
        report["rpo"].startswith("not measured") and "housekeeping" in report["rpo"]), report["loss"]
    promote = next(step for step in report["steps"] if step["step"] == "promote")["detail"]
    assert promote["promoted_by"] == {"postgres": "the operator in cloudsql", "redis": "the operator in memorystore"}
    assert promote["old_redis_now_replica_of"].startswith("none: memorystore does not let it follow"), promote
    print(f"manual failover: RTO {report['rto_seconds']} s, loss {report['loss']}")

    again = regions.run("dr-failover.yml", extra_vars=PROMOTED)
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
