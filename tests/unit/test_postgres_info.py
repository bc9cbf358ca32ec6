"""sapphire_postgres_info: checks over gathered facts (healthy and each unhealthy case)."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest
from conftest import load_module

mod = load_module("sapphire_postgres_info")

TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]
PARAMS: dict[str, Any] = {
    "postgres_host": "127.0.0.1",
    "postgres_port": 5432,
    "postgres_user": "sapphire",
    "postgres_password": "pw",
    "postgres_database": "sapphire",
    "connect_timeout": 1.0,
    "expected_role": "any",
    "min_standbys": 0,
    "max_replication_lag_bytes": 1024,
    "max_replication_lag_seconds": 30.0,
    "tables": TABLES,
    "partition_column": "timestamp",
    "connections_warn_percent": 80.0,
    "connections_fail_percent": 90.0,
    "max_transaction_seconds": 300.0,
    "check_archiving": True,
}
PRIMARY: dict[str, Any] = {
    "version": "PostgreSQL 15.18 on x86_64",
    "in_recovery": False,
    "max_connections": 200,
    "connections": 10,
    "archive_mode": "on",
    "replication": [
        {
            "name": "postgres-dr",
            "client": "127.0.0.1",
            "state": "streaming",
            "sync_state": "async",
            "lag_bytes": 0,
            "lag_seconds": None,
        }
    ],
    "tables": {t: {"relkind": "p", "partkey": 'RANGE ("timestamp")', "partitions": 9} for t in TABLES},
    "timescaledb": None,
    "archiver": {
        "archived_count": 12,
        "failed_count": 0,
        "last_archived_wal": "0001",
        "last_archived_time": "t",
        "last_failed_wal": None,
        "last_failed_time": None,
        "failing": False,
    },
    "long_transactions": [],
}


def facts(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(PRIMARY)
    data.update(changes)
    return data


def params(**changes: Any) -> dict[str, Any]:
    return {**PARAMS, **changes}


def statuses(checks: list[dict[str, Any]]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in checks}


def test_healthy_primary_has_no_problem() -> None:
    checks, standbys = mod.evaluate(facts(), params(expected_role="primary", min_standbys=1))
    assert set(statuses(checks).values()) == {"ok"}
    assert standbys[0]["name"] == "postgres-dr"


@pytest.mark.parametrize(
    ("data", "expected", "status"),
    [(facts(), "primary", "ok"), (facts(in_recovery=True), "primary", "fail"), (facts(), "standby", "fail")],
)
def test_role(data: dict[str, Any], expected: str, status: str) -> None:
    assert mod.check_role(data, expected)["status"] == status


LAGGING = {"name": "postgres-dr", "client": "127.0.0.1", "state": "streaming", "sync_state": "async"}


@pytest.mark.parametrize(
    ("replication", "extra", "status", "phrase"),
    [
        ([{**LAGGING, "lag_bytes": 5 * 2**20, "lag_seconds": 1.0}], {}, "fail", "lags 5.0MiB"),
        ([{**LAGGING, "lag_bytes": 0, "lag_seconds": 120.0}], {}, "fail", "120.0s"),
        ([{**LAGGING, "state": "catchup", "lag_bytes": 0, "lag_seconds": 0}], {}, "fail", "is catchup"),
        ([{**LAGGING, "lag_bytes": None, "lag_seconds": None}], {}, "fail", "grant pg_monitor"),
        ([], {"min_standbys": 1}, "fail", "0 streaming standby(s), 1 required"),
        ([], {}, "ok", "without standbys"),
    ],
)
def test_replication_lag_per_standby_on_a_primary(
    replication: list[dict[str, Any]], extra: dict[str, Any], status: str, phrase: str
) -> None:
    check, standbys = mod.check_replication(facts(replication=replication), params(**extra))
    assert check["status"] == status
    assert phrase in check["msg"]
    assert standbys == replication


@pytest.mark.parametrize(
    ("standby", "status", "phrase"),
    [
        (
            {"lag_bytes": 0, "lag_seconds": 0.0, "receiver": "streaming", "sender": "10.0.0.1:5432"},
            "ok",
            "streaming from",
        ),
        ({"lag_bytes": 4096, "lag_seconds": 2.0, "receiver": "streaming", "sender": "p:5432"}, "fail", "4.0KiB"),
        ({"lag_bytes": 0, "lag_seconds": 600.0, "receiver": "streaming", "sender": "p:5432"}, "fail", "600.0s"),
        ({"lag_bytes": 0, "lag_seconds": 0.0, "receiver": None, "sender": None}, "fail", "not streaming"),
    ],
)
def test_replay_lag_on_a_standby(standby: dict[str, Any], status: str, phrase: str) -> None:
    check, _ = mod.check_replication(facts(in_recovery=True, standby=standby), params())
    assert check["status"] == status
    assert phrase in check["msg"]


@pytest.mark.parametrize(
    ("table", "timescale", "status", "phrase"),
    [
        (None, None, "fail", "is missing"),
        ({"relkind": "r", "partkey": None, "partitions": 0}, None, "fail", "not time-partitioned"),
        ({"relkind": "r", "partkey": None, "partitions": 0}, "2.14.2", "fail", "create_hypertable"),
        ({"relkind": "p", "partkey": "RANGE (symbol)", "partitions": 3}, None, "fail", "not by timestamp"),
        ({"relkind": "p", "partkey": 'RANGE ("timestamp")', "partitions": 0}, None, "fail", "no partitions"),
        (
            {"relkind": "r", "partkey": None, "partitions": 0, "hypertable_dimensions": ["timestamp"]},
            "2.14.2",
            "ok",
            "hypertable on timestamp",
        ),
        (
            {"relkind": "r", "partkey": None, "partitions": 0, "hypertable_dimensions": ["created"]},
            "2.14.2",
            "fail",
            "not timestamp",
        ),
    ],
)
def test_trades_table_must_be_time_partitioned(
    table: dict[str, Any] | None, timescale: str | None, status: str, phrase: str
) -> None:
    data = facts(timescaledb=timescale)
    if table is None:
        del data["tables"]["trades"]
    else:
        data["tables"]["trades"] = table
    check = next(c for c in mod.check_tables(data, params()) if c["name"] == "postgres_table:trades")
    assert check["status"] == status
    assert phrase in check["msg"]


@pytest.mark.parametrize(("connections", "status"), [(100, "ok"), (165, "warn"), (185, "fail")])
def test_connections_against_max_connections(connections: int, status: str) -> None:
    assert mod.check_connections(facts(connections=connections), params())["status"] == status


@pytest.mark.parametrize(
    ("mode", "archiver", "status"),
    [
        ("off", {}, "skipped"),
        ("on", PRIMARY["archiver"], "ok"),
        ("on", {**PRIMARY["archiver"], "failed_count": 3, "last_failed_wal": "0002", "failing": True}, "fail"),
        ("on", {**PRIMARY["archiver"], "failed_count": 3, "failing": False}, "ok"),
    ],
)
def test_wal_archiving_failures(mode: str, archiver: dict[str, Any], status: str) -> None:
    assert mod.check_archiving(facts(archive_mode=mode, archiver=archiver), params())["status"] == status


def test_long_transactions_are_reported_with_pid_and_age() -> None:
    long = [
        {
            "pid": 4242,
            "user": "sapphire",
            "application": "psql",
            "state": "idle in transaction",
            "age_seconds": 901.0,
            "query": "BEGIN",
        }
    ]
    check = mod.check_long_transactions(facts(long_transactions=long), params())
    assert check["status"] == "warn"
    assert "pid 4242" in check["msg"]
    assert mod.check_long_transactions(facts(), params())["status"] == "ok"


@pytest.mark.parametrize(
    ("partkey", "columns"), [('RANGE ("timestamp")', ["timestamp"]), ("RANGE (ts, id)", ["ts", "id"]), (None, [])]
)
def test_partition_key_parsing(partkey: str | None, columns: list[str]) -> None:
    assert mod.partition_columns(partkey) == columns


def test_unreachable_server_is_data() -> None:
    def refuse(_p: dict[str, Any]) -> Any:
        raise psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
        )

    result = mod.collect(params(), refuse)
    assert result["healthy"] is False
    assert result["checks"][0]["status"] == "fail"
    assert "is PostgreSQL running" in result["checks"][0]["msg"]
    assert all(c["status"] == "skipped" for c in result["checks"][1:])


def test_a_fenced_server_that_is_stopped_is_reported_fenced_not_failed() -> None:
    def refuse(_p: dict[str, Any]) -> Any:
        raise psycopg.OperationalError("connection refused")

    result = mod.collect(params(fenced=True), refuse)
    assert result["healthy"] is True
    assert result["checks"][0]["name"] == "postgres_fenced" and result["checks"][0]["status"] == "ok"
    assert mod.collect(params(fenced=False), refuse)["healthy"] is False


def test_a_fenced_server_that_answers_as_a_primary_fails() -> None:
    checks, _ = mod.evaluate(facts(), params(expected_role="primary", fenced=True))
    assert statuses(checks)["postgres_role"] == "fail"
    checks, _ = mod.evaluate(facts(in_recovery=True, standby={"lag_bytes": 0, "lag_seconds": 0.0,
                                                                "receiver": "streaming", "sender": "h:1"}),
                             params(expected_role="primary", fenced=True))
    assert statuses(checks)["postgres_role"] == "ok"


@pytest.mark.parametrize(("read_only", "writers", "fenced"), [
    (True, [], True),                         # the remote fence's two steps: read-only, no writer may log in
    (True, ["sapphire_agent"], False),        # an agent could still log in (and SET its session writable)
    (False, [], False),                       # writers locked out, but the database takes writes
    (True, None, False),                      # the writers were not read: read-only alone is not enough
])
def test_a_primary_counts_as_fenced_only_when_read_only_and_no_writer_may_log_in(
        read_only: bool, writers: list[str] | None, fenced: bool) -> None:
    observed = facts(read_only=read_only) | ({"writers_may_log_in": writers} if writers is not None else {})
    assert mod.fenced_over_the_network(observed) is fenced


def test_the_served_certificate_fails_once_ended_warns_before_and_is_ok_otherwise() -> None:
    import datetime

    now = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
    day = datetime.timedelta(days=1)
    assert mod.check_certificate(now - day, 30, now)["status"] == "fail"
    warned = mod.check_certificate(now + 10 * day, 30, now)
    assert warned["status"] == "warn" and "in 10 days" in warned["msg"]
    assert mod.check_certificate(now + 300 * day, 30, now)["status"] == "ok"
    assert mod.check_certificate(None, 30, now)["msg"] == "the server does not speak TLS"
