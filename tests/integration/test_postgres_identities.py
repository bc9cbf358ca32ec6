"""PostgreSQL logins per purpose, converged by the SQL the cluster's init Job runs (sapphire_postgres_grants_sql).

A real PostgreSQL (tests/integration/conftest.py applies the schema as the owner, then the init Job's SQL as a
superuser with the passwords in the environment). Each login may do what its component needs and nothing else: the
agents read and append trading data but cannot delete, rewrite or restructure it, the coordinator appends decisions
only, the monitoring login reads. The SQL converges again without error once the epoch fence table exists, and then
grants the writers the lock the fence needs (FOR SHARE) without the right to move the epoch.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from conftest import PG_BIN, POSTGRES_LOGIN_PASSWORDS, PostgresServer, as_postgres
from sapphire_testlib import postgres_identities_sql, postgres_privilege_problems, postgres_role_logins

pytestmark = [pytest.mark.servers]

PASSWORDS = {"sapphire_agent": POSTGRES_LOGIN_PASSWORDS["postgres_agent_password"],
             "sapphire_coordinator": POSTGRES_LOGIN_PASSWORDS["postgres_coordinator_password"],
             "sapphire_monitor": POSTGRES_LOGIN_PASSWORDS["postgres_monitor_password"]}
EPOCH_TABLE = ("CREATE TABLE IF NOT EXISTS sapphire_epoch "
               "(singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), "
               "epoch bigint NOT NULL CHECK (epoch >= 0), region text NOT NULL DEFAULT '', "
               "operation text NOT NULL DEFAULT '', promoted_at timestamptz NOT NULL DEFAULT now())")


def converge_identities(server: PostgresServer, passwords: dict[str, str]) -> None:
    logins, _ = postgres_role_logins()
    result = as_postgres(str(PG_BIN / "psql"), "-h", str(server.directory), "-p", str(server.port), "-U", "postgres",
                         "-d", "sapphire", "-q", "-f", "-", input=postgres_identities_sql(), check=False,
                         env={**os.environ, **{login["env"]: passwords[login["user"]] for login in logins}})
    assert result.returncode == 0, result.stderr
    assert not {value for value in passwords.values()} & set(result.stdout.split()), "psql printed a password"


def test_each_login_may_do_what_its_component_needs_and_nothing_more(throwaway_postgres: PostgresServer) -> None:
    server = throwaway_postgres
    with server.connect() as owner:  # the owner creates the fence table, as the postgres role does
        owner.execute(EPOCH_TABLE)
        owner.execute("INSERT INTO sapphire_epoch (epoch) VALUES (3) ON CONFLICT DO NOTHING")
    converge_identities(server, PASSWORDS)  # a second converge: idempotent, and now with the fence table

    assert postgres_privilege_problems(server.port, PASSWORDS) == []
    assert server.psql("SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb "
                       "|| rolreplication, ',' ORDER BY rolname) FROM pg_roles "
                       "WHERE rolname LIKE 'sapphire\\_%'", "postgres") == (
        "sapphire_agent:falsefalsefalsefalse,sapphire_coordinator:falsefalsefalsefalse,"
        "sapphire_monitor:falsefalsefalsefalse")


def test_a_new_password_from_the_secret_replaces_the_old_one(throwaway_postgres: PostgresServer) -> None:
    rotated = {**PASSWORDS, "sapphire_agent": "pg-agent-Rotated-2"}
    converge_identities(throwaway_postgres, rotated)
    with psycopg.connect(host="127.0.0.1", port=throwaway_postgres.port, user="sapphire_agent",
                         password="pg-agent-Rotated-2", dbname="sapphire") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "sapphire_agent"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=throwaway_postgres.port, user="sapphire_agent",
                        password=PASSWORDS["sapphire_agent"], dbname="sapphire")


def test_a_missing_password_stops_the_converge_before_any_login_changes(throwaway_postgres: PostgresServer) -> None:
    """The agents' password is rotated in the same run in which the monitor's Secret is missing: the run fails naming
    the missing one, and the agents keep their old password (the converge is one transaction, so a rotation is never
    applied to some logins only)."""
    server = throwaway_postgres
    environment = {key: value for key, value in os.environ.items() if not key.startswith("POSTGRES_")}
    environment.update(POSTGRES_AGENT_PASSWORD="pg-agent-Rotated-3",
                       POSTGRES_COORDINATOR_PASSWORD=PASSWORDS["sapphire_coordinator"])
    result = as_postgres(str(PG_BIN / "psql"), "-h", str(server.directory), "-p", str(server.port), "-U", "postgres",
                         "-d", "sapphire", "-q", "-f", "-", input=postgres_identities_sql(), check=False,
                         env=environment)
    assert result.returncode != 0
    assert "POSTGRES_MONITOR_PASSWORD is not set: the password of the login sapphire_monitor" in result.stderr, (
        result.stderr)
    with psycopg.connect(host="127.0.0.1", port=server.port, user="sapphire_agent",
                         password=PASSWORDS["sapphire_agent"], dbname="sapphire") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "sapphire_agent"
