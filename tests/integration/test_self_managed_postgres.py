"""The postgres role's self-managed provider (postgres_external_provider self_managed): a PostgreSQL the toolkit
reaches over the network with an administrative login but whose host it cannot log in to.

A throw-away primary and its streaming standby (tests/integration/conftest.py) stand for the two regions' servers.
- remote_fence on the primary: no login that writes (the owner, the agents', the coordinator's) can log in any
  more, their open sessions are ended, a new transaction is read-only even for a superuser, the last WAL position
  is read; a second run changes nothing.
- remote_promote on the standby once it replayed that position: a writable primary the agents log in to
  (the fence's NOLOGIN had replicated to it), nothing lost; a second run changes nothing; --check promotes nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    POSTGRES_LOGIN_PASSWORDS,
    PostgresServer,
    start_postgres_primary,
    start_postgres_standby,
    traversable_tmp,
)
from sapphire_testlib import PlaybookResult, run_playbook, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PLAYBOOK = "tests/integration/playbooks/postgres_entry_point.yml"
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, PostgresServer]]:
    path = traversable_tmp()
    primary = start_postgres_primary(path)
    primary.psql(f"CREATE ROLE sapphire_admin SUPERUSER LOGIN PASSWORD '{ADMIN_PASSWORD}'", "postgres")
    standby = start_postgres_standby(primary, path)
    yield {"primary": primary, "standby": standby}
    standby.stop()
    primary.stop()


def run(server: PostgresServer, entry_point: str, check: bool = False) -> PlaybookResult:
    return run_playbook(PLAYBOOK, "localhost,", check=check, extra_vars={
        "postgres_entry_point": entry_point, "ansible_python_interpreter": sys.executable,
        "postgres_external_host": "127.0.0.1", "postgres_external_port": server.port,
        "postgres_external_sslmode": "disable", "postgres_admin_user": "sapphire_admin",
        "postgres_admin_password": ADMIN_PASSWORD, "postgres_user": "sapphire"})


def recorded(result: PlaybookResult) -> dict[str, Any]:
    shown = result.task_results("Show what it recorded").get("localhost")
    assert shown, f"the playbook did not get to the end:\n{result.explain()}"
    return json.loads(shown["msg"])


def admin(server: PostgresServer) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=server.port, user="sapphire_admin", password=ADMIN_PASSWORD,
                           dbname="sapphire", autocommit=True)


def agent(server: PostgresServer) -> psycopg.Connection:
    """The agents' login (the logins per purpose of the postgres role)."""
    return psycopg.connect(host="127.0.0.1", port=server.port, user="sapphire_agent", dbname="sapphire",
                           password=POSTGRES_LOGIN_PASSWORDS["postgres_agent_password"], autocommit=True)


def insert_trade(server: PostgresServer, order_id: str) -> None:
    with agent(server) as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, %s)", (order_id,))


def test_the_fenced_primary_takes_no_application_write(pair: dict[str, PostgresServer]) -> None:
    primary = pair["primary"]
    insert_trade(primary, "before-fence")
    session = primary.connect()  # an owner's session and an agent's open across the fence
    session.execute("SELECT 1")
    agent_session = agent(primary)
    agent_session.execute("SELECT 1")

    result = run(primary, "remote_fence")
    assert result.rc == 0, result.explain()
    fence = recorded(result)["remote_fence"]
    assert fence["was_primary"] is True or fence["was_primary"] == "True", fence
    assert fence["app_sessions_ended"] >= 2, fence

    for ended in (session, agent_session):
        with pytest.raises(psycopg.OperationalError):
            ended.execute("SELECT 1")  # ended by the fence
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        primary.connect()
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        agent(primary)
    with admin(primary) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, 'superuser-after-fence')")
    with admin(primary) as conn:
        assert conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0] == fence["last_lsn"]

    again = run(primary, "remote_fence")
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def test_the_standby_is_promoted_over_the_network_and_takes_application_writes(
        pair: dict[str, PostgresServer]) -> None:
    primary, standby = pair["primary"], pair["standby"]
    with admin(primary) as conn:
        last = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    wait_for(lambda: admin(standby).execute(
        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (last,)).fetchone()[0], 30, "the standby replayed the fence")

    checked = run(standby, "remote_promote", check=True)
    assert checked.rc == 0, checked.explain()
    with admin(standby) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True, "--check promoted the standby"

    result = run(standby, "remote_promote")
    assert result.rc == 0, result.explain()
    assert recorded(result)["remote_promotion"]["promoted"] in (True, "True")
    with admin(standby) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        assert conn.execute("SELECT count(*) FROM trades WHERE order_id = 'before-fence'").fetchone()[0] == 1
    insert_trade(standby, "after-promotion")  # the application logs in and writes

    again = run(standby, "remote_promote")
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def test_an_unreachable_server_is_named(pair: dict[str, PostgresServer], tmp_path: Path) -> None:
    gone = PostgresServer(port=1, directory=tmp_path)
    result = run(gone, "remote_promote")
    assert result.rc != 0
    assert "127.0.0.1" in " ".join(result.failure_messages()) or "port 1" in result.explain(), result.explain()
