#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_postgres_info
short_description: Check the health of a Sapphire PostgreSQL server (role, replication, schema, load, archiving)
description:
  - Connects to one PostgreSQL server (read-only session) and reports, as data, whether it is
    reachable, whether it is a primary or a standby (C(pg_is_in_recovery())), the replication lag
    of every standby in bytes and seconds (C(pg_stat_replication) on a primary; receive versus
    replay position and replay delay on a standby), that the five trading tables exist and are
    time-partitioned, connections against C(max_connections), WAL archiving failures and
    long-running transactions.
  - A table counts as time-partitioned when it is a TimescaleDB hypertable whose time dimension
    is O(partition_column) (where the C(timescaledb) extension is installed), or else a native
    partitioned table (C(relkind = 'p')) whose partition key is O(partition_column) and which has
    at least one partition.
  - An unreachable server or a failed login is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  expected_role:
    description: Role the server must have; C(any) reports it without judging.
    type: str
    choices: [any, primary, standby]
    default: any
  fenced:
    description:
      - The server was fenced by a DR switch (stopped read-only with standby.signal, or, an external server, its
        application login forbidden over the network; C(postgres_fenced) in the platform state). Not answering is
        then the expected state and reported C(ok) as fenced; answering as a standby is fine; answering as a primary
        is C(ok) only when it takes no write (new transactions read-only and none of O(writer_logins) may log in, as
        the remote fence leaves it) and fails otherwise (a second writable primary).
    type: bool
    default: false
  certificate_warn_days:
    description:
      - With O(postgres_sslmode) V(verify-ca) or V(verify-full), the certificate the server presents is read (a TLS
        handshake of its own) and its end checked - C(fail) when it has expired, C(warn) within this many days.
    type: int
    default: 30
  writer_logins:
    description:
      - The logins that write trading data (the owner, the agents', the coordinator's). A fenced primary must forbid
        each of them to log in; the check reads C(pg_roles), which any login may.
    type: list
    elements: str
    default: []
  min_standbys:
    description: On a primary, the number of streaming standbys below which the check fails.
    type: int
    default: 0
  max_replication_lag_bytes:
    description: WAL bytes a standby may be behind before the replication check fails.
    type: int
    default: 16777216
  max_replication_lag_seconds:
    description: Seconds of replay delay before the replication check fails.
    type: float
    default: 30
  tables:
    description: Tables that must exist and be time-partitioned.
    type: list
    elements: str
    default: [trades, agent_decisions, signals, liquidations, whale_transactions]
  partition_column:
    description: Column the tables must be partitioned by.
    type: str
    default: timestamp
  connections_warn_percent:
    description: Connections as a percentage of C(max_connections) at which the check warns.
    type: float
    default: 80
  connections_fail_percent:
    description: Connections as a percentage of C(max_connections) at which the check fails.
    type: float
    default: 90
  max_transaction_seconds:
    description: Age of an open transaction above which it is reported (warn).
    type: float
    default: 300
  check_archiving:
    description: Report WAL archiving failures from C(pg_stat_archiver).
    type: bool
    default: true
extends_documentation_fragment:
  - sapphire.health
  - sapphire.postgres
  - sapphire.timeout
requirements:
  - psycopg >= 3
seealso:
  - module: sapphire_market_data_info
  - module: sapphire_risk_info
"""

EXAMPLES = r"""
- name: Check the primary PostgreSQL, which must stream to one standby
  sapphire_postgres_info:
    postgres_host: 127.0.0.1
    postgres_port: 15432
    postgres_password: "{{ postgres_password }}"
    expected_role: primary
    min_standbys: 1
  register: postgres_health

- name: Check the DR standby
  sapphire_postgres_info:
    postgres_port: 15433
    postgres_password: "{{ postgres_password }}"
    expected_role: standby
"""

RETURN = r"""
healthy:
  description: True when no check failed.
  returned: always
  type: bool
target:
  description: The server that was checked.
  returned: always
  type: str
  sample: postgres 127.0.0.1:15432/sapphire
checks:
  description: >-
    One entry per check (name, status ok|warn|fail|skipped, observed, threshold, msg). Names:
    postgres_reachable, postgres_role, postgres_replication, postgres_table:<table> (one per table),
    postgres_connections, postgres_wal_archiving, postgres_long_transactions.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: "postgres_table:trades", status: ok, observed: native, threshold: timestamp,
       msg: "partitioned by timestamp"}
problems:
  description: Sentences an operator can act on, one per failing or warning check.
  returned: always
  type: list
  elements: str
standbys:
  description: Per standby (on a primary) or for this server (on a standby) the lag in bytes and seconds.
  returned: when the server was reachable
  type: list
  elements: dict
  sample: [{name: postgres-dr, state: streaming, lag_bytes: 0, lag_seconds: 0.0}]
role:
  description: primary or standby.
  returned: when the server was reachable
  type: str
read_only:
  description:
    - Whether new transactions are read-only (C(default_transaction_read_only)); a primary fenced over the network
      by a DR switch (postgres role, remote_fence) takes no application write.
  returned: when the server was reachable
  type: bool
position:
  description:
    - Where this server is in the WAL stream, for a DR switch to measure the lag and the loss in bytes. C(lsn) is
      the current write position on a primary and the replayed position on a standby; C(receive_lsn),
      C(replay_lsn), C(replay_delay_seconds), C(last_contact_seconds) (since the last message from the
      primary; none once the link is gone), C(paused) (WAL replay paused) and C(last_replay_age_seconds) (since
      the commit of the last transaction replayed - with the primary gone, an upper bound of the writes that can
      be missing) are set on a standby only, C(replay_lsn) also on a promoted primary (the last record it replayed
      before its promotion).
  returned: when the server was reachable
  type: dict
  sample: {lsn: 0/3000148, receive_lsn: 0/3000148, replay_lsn: 0/3000148, replay_delay_seconds: 0.0,
           last_contact_seconds: 0.4}
"""

import datetime
import re
import socket
import struct
from collections.abc import Callable
from typing import Any

from ansible.module_utils.sapphire_connections import (
    POSTGRES_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    describe_postgres_error,
    postgres_connect,
    postgres_endpoint,
    run_health_module,
)
from ansible.module_utils.sapphire_health import (
    by_level,
    certificate_end,
    check_served_certificate,
    fail,
    finish,
    fmt_bytes,
    fmt_seconds,
    new_result,
    ok,
    skip_all,
    skipped,
    warn,
)

DEFAULT_TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]

Q_BASICS = """
SELECT version(), pg_is_in_recovery(), current_setting('max_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
       current_setting('archive_mode'),
       -- the server's default, not this session's (the module's own session is SET read-only)
       (SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_read_only') = 'on'
"""
Q_PRIMARY_REPLICATION = """
SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'), state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
       extract(epoch FROM replay_lag)::float8
FROM pg_stat_replication ORDER BY application_name
"""
Q_STANDBY_REPLICATION = """
SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint,
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
       (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver LIMIT 1)
"""
Q_POSITION = """
SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8,
       extract(epoch FROM now() - (SELECT last_msg_receipt_time FROM pg_stat_wal_receiver LIMIT 1))::float8,
       pg_is_in_recovery() AND pg_is_wal_replay_paused(),
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
"""
Q_TABLES = """
SELECT c.relname, c.relkind::text, pg_get_partkeydef(c.oid),
       (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)::int
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (current_schemas(false)) AND c.relname = ANY (%s) AND c.relkind IN ('r', 'p')
"""
Q_TIMESCALE = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
Q_HYPERTABLES = """
SELECT h.hypertable_name, d.column_name
FROM timescaledb_information.hypertables h
LEFT JOIN timescaledb_information.dimensions d
       ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name
WHERE h.hypertable_name = ANY (%s)
"""
Q_ARCHIVER = """
SELECT archived_count, failed_count, last_archived_wal, last_archived_time::text, last_failed_wal,
       last_failed_time::text, coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
FROM pg_stat_archiver
"""
Q_LONG_TRANSACTIONS = """
SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(state, ''),
       extract(epoch FROM now() - xact_start)::float8 AS age, left(coalesce(query, ''), 160)
FROM pg_stat_activity
WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
  AND now() - xact_start > make_interval(secs => %s)
ORDER BY age DESC LIMIT 10
"""


def gather(conn: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Everything the checks need, read in one short read-only session."""
    facts: dict[str, Any] = {}
    version, in_recovery, max_conn, connections, archive_mode, read_only = conn.execute(Q_BASICS).fetchone()
    facts.update(version=version, in_recovery=bool(in_recovery), max_connections=max_conn,
                 connections=connections, archive_mode=archive_mode, read_only=bool(read_only))
    if params.get("writer_logins"):
        facts["writers_may_log_in"] = sorted(row[0] for row in conn.execute(
            "SELECT rolname::text FROM pg_roles WHERE rolcanlogin AND rolname = ANY (%s)",
            (list(params["writer_logins"]),)).fetchall())
    if in_recovery:
        lag_bytes, lag_seconds, status, sender = conn.execute(Q_STANDBY_REPLICATION).fetchone()
        facts["standby"] = {"lag_bytes": lag_bytes, "lag_seconds": lag_seconds, "receiver": status, "sender": sender}
    else:
        facts["replication"] = [
            {"name": row[0] or row[1], "client": row[1], "state": row[2], "sync_state": row[3],
             "lag_bytes": row[4], "lag_seconds": row[5]}
            for row in conn.execute(Q_PRIMARY_REPLICATION).fetchall()
        ]
    lsn, receive, replay, delay, contact, paused, replay_age = conn.execute(Q_POSITION).fetchone()
    # A promoted server keeps pg_last_wal_replay_lsn() at the last record it replayed as a standby: where its
    # history forked from the old primary's, the end of what a DR switch's loss is measured against.
    facts["position"] = ({"lsn": lsn} | ({"replay_lsn": replay} if replay else {})) if not in_recovery else {
        "lsn": lsn, "receive_lsn": receive, "replay_lsn": replay, "replay_delay_seconds": delay,
        "last_contact_seconds": contact, "paused": bool(paused), "last_replay_age_seconds": replay_age}
    tables = params["tables"]
    facts["tables"] = {
        row[0]: {"relkind": row[1], "partkey": row[2], "partitions": row[3]}
        for row in conn.execute(Q_TABLES, (tables,)).fetchall()
    }
    row = conn.execute(Q_TIMESCALE).fetchone()
    facts["timescaledb"] = row[0] if row else None
    if facts["timescaledb"]:
        for name, column in conn.execute(Q_HYPERTABLES, (tables,)).fetchall():
            facts["tables"].setdefault(name, {}).setdefault("hypertable_dimensions", []).append(column)
    if params["check_archiving"]:
        row = conn.execute(Q_ARCHIVER).fetchone()
        facts["archiver"] = dict(zip(("archived_count", "failed_count", "last_archived_wal", "last_archived_time",
                                      "last_failed_wal", "last_failed_time", "failing"), row, strict=False))
    facts["long_transactions"] = [
        dict(zip(("pid", "user", "application", "state", "age_seconds", "query"), row, strict=False))
        for row in conn.execute(Q_LONG_TRANSACTIONS, (float(params["max_transaction_seconds"]),)).fetchall()
    ]
    return facts


def check_role(facts: dict[str, Any], expected: str) -> dict[str, Any]:
    role = "standby" if facts["in_recovery"] else "primary"
    if expected in ("any", role):
        return ok("postgres_role", f"{role} ({facts['version'].split(' on ')[0]})", role, expected)
    return fail("postgres_role", f"server is a {role} but {expected} was expected"
                + ("; it may have been promoted (split brain?) or the inventory's postgres_replication_role is "
                   "stale" if role == "primary" else "; writes will fail: is this the demoted old primary?"),
                role, expected)


def check_replication(facts: dict[str, Any], params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    max_bytes = params["max_replication_lag_bytes"]
    max_seconds = params["max_replication_lag_seconds"]
    threshold = {"bytes": max_bytes, "seconds": max_seconds}
    if facts["in_recovery"]:
        standby = facts["standby"]
        entry = {"name": "self", "state": standby.get("receiver") or "not streaming", "sender": standby.get("sender"),
                 "lag_bytes": standby.get("lag_bytes"), "lag_seconds": standby.get("lag_seconds")}
        if standby.get("receiver") != "streaming":
            return fail("postgres_replication", f"standby is not streaming (WAL receiver: {entry['state']}); "
                        "check primary_conninfo, the replication password and that the primary is up",
                        entry, threshold), [entry]
        problems = lag_problems(entry, max_bytes, max_seconds)
        if problems:
            return fail("postgres_replication", f"standby replay lag from {entry['sender']}: " + ", ".join(problems),
                        entry, threshold), [entry]
        return ok("postgres_replication", f"streaming from {entry['sender']}, replay lag "
                  f"{fmt_bytes(entry['lag_bytes'] or 0)} / {fmt_seconds(entry['lag_seconds'] or 0)}",
                  entry, threshold), [entry]
    standbys = facts.get("replication", [])
    bad = []
    for entry in standbys:
        if entry["state"] != "streaming":
            bad.append(f"standby {entry['name']} is {entry['state']}")
            continue
        if entry["lag_bytes"] is None:
            bad.append(f"standby {entry['name']}: lag not visible to {params['postgres_user']} (grant pg_monitor)")
            continue
        problems = lag_problems(entry, max_bytes, max_seconds)
        if problems:
            bad.append(f"standby {entry['name']} lags " + ", ".join(problems))
    streaming = sum(1 for entry in standbys if entry["state"] == "streaming")
    if streaming < params["min_standbys"]:
        bad.insert(0, f"{streaming} streaming standby(s), {params['min_standbys']} required")
    if bad:
        return fail("postgres_replication", "; ".join(bad), standbys, threshold), standbys
    if not standbys:
        return ok("postgres_replication", "primary without standbys (none required)", standbys, threshold), standbys
    return ok("postgres_replication", f"{streaming} standby(s) streaming within the lag limits", standbys,
              threshold), standbys


def lag_problems(entry: dict[str, Any], max_bytes: int, max_seconds: float) -> list[str]:
    problems = []
    if (entry.get("lag_bytes") or 0) > max_bytes:
        problems.append(f"{fmt_bytes(entry['lag_bytes'])} of WAL (> {fmt_bytes(max_bytes)})")
    if (entry.get("lag_seconds") or 0) > max_seconds:
        problems.append(f"{entry['lag_seconds']:.1f}s (> {max_seconds:g}s)")
    return problems


def partition_columns(partkey: str | None) -> list[str]:
    """Columns of a partition key definition such as 'RANGE ("timestamp")'."""
    if not partkey:
        return []
    inner = partkey[partkey.find("(") + 1: partkey.rfind(")")]
    return [part.strip().strip('"') for part in re.split(r",", inner) if part.strip()]


def check_tables(facts: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    column = params["partition_column"]
    checks = []
    for table in params["tables"]:
        name = f"postgres_table:{table}"
        info = facts["tables"].get(table)
        if info is None or "relkind" not in info:
            checks.append(fail(name, f"table {table} is missing; run deploy.yml (postgres role) to create the schema",
                               "missing", column))
            continue
        dimensions = info.get("hypertable_dimensions")
        if dimensions:
            if column in dimensions:
                checks.append(ok(name, f"{table} is a hypertable on {column}", "hypertable", column))
            else:
                checks.append(fail(name, f"{table} is a hypertable on {', '.join(map(str, dimensions))}, not "
                                   f"{column}", "hypertable", column))
            continue
        if info["relkind"] != "p":
            hint = "create_hypertable()" if facts.get("timescaledb") else "PARTITION BY RANGE"
            checks.append(fail(name, f"{table} exists but is not time-partitioned (plain table); recreate it with "
                               f"{hint} on {column}", "plain", column))
            continue
        columns = partition_columns(info.get("partkey"))
        if columns != [column]:
            checks.append(fail(name, f"{table} is partitioned by {info.get('partkey')}, not by {column}",
                               info.get("partkey"), column))
        elif not info.get("partitions"):
            checks.append(fail(name, f"{table} has no partitions, so every insert fails; run "
                               "sapphire_ensure_partitions()", "native, 0 partitions", column))
        else:
            checks.append(ok(name, f"{table} partitioned by {column} ({info['partitions']} partitions)",
                             f"native, {info['partitions']} partitions", column))
    return checks


def check_connections(facts: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    used, limit = facts["connections"], facts["max_connections"]
    percent = round(100.0 * used / limit, 1) if limit else 100.0
    result = by_level("postgres_connections", percent, params["connections_warn_percent"],
                      params["connections_fail_percent"], f"{used} of {limit} connections in use", unit="%")
    result["observed"] = {"connections": used, "max_connections": limit, "percent": percent}
    return result


def check_archiving(facts: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if not params["check_archiving"]:
        return skipped("postgres_wal_archiving", "WAL archiving not checked", None, None)
    mode = facts.get("archive_mode", "off")
    archiver = facts.get("archiver") or {}
    if mode == "off":
        return skipped("postgres_wal_archiving", "archive_mode is off", archiver, None)
    if archiver.get("failing"):
        return fail("postgres_wal_archiving", "WAL archiving is failing: last failure "
                    f"{archiver.get('last_failed_wal')} at {archiver.get('last_failed_time')}, last success "
                    f"{archiver.get('last_archived_time')}; "
                    "check archive_command and the archive destination (point-in-time recovery is at risk)",
                    archiver, "no failure since the last success")
    if archiver.get("failed_count"):
        return ok("postgres_wal_archiving", f"archiving recovered after {archiver['failed_count']} failure(s); last "
                  f"archived {archiver.get('last_archived_wal')}", archiver, "no failure since the last success")
    return ok("postgres_wal_archiving", f"{archiver.get('archived_count', 0)} WAL segments archived, no failures",
              archiver, "no failure since the last success")


def check_long_transactions(facts: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    limit = params["max_transaction_seconds"]
    found = facts.get("long_transactions", [])
    if not found:
        return ok("postgres_long_transactions", f"no transaction open longer than {fmt_seconds(limit)}", [], limit)
    listed = ", ".join(f"pid {item['pid']} ({item['user']}, {item['state']}, {fmt_seconds(item['age_seconds'])})"
                       for item in found[:5])
    return warn("postgres_long_transactions", f"{len(found)} transaction(s) open longer than {fmt_seconds(limit)}: "
                f"{listed}; they hold back vacuum and replication cleanup", found, limit)


def fenced_over_the_network(facts: dict[str, Any]) -> bool:
    """A primary that takes no trading write: new transactions read-only and no writer login allowed (the remote
    fence's two steps). Without writer_logins only the first can be seen, which is not enough."""
    return bool(facts.get("read_only")) and facts.get("writers_may_log_in") == []


def evaluate(facts: dict[str, Any], params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    replication, standbys = check_replication(facts, params)
    expected = "standby" if params.get("fenced") else params["expected_role"]
    checks = [check_role(facts, expected), replication]
    checks += check_tables(facts, params)
    checks += [check_connections(facts, params), check_archiving(facts, params), check_long_transactions(facts, params)]
    return checks, standbys


def served_certificate_end(host: str, port: int, timeout: float) -> datetime.datetime | None:
    """When the certificate the server presents ends (PostgreSQL's SSLRequest first); None without TLS."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        if raw.recv(1) != b"S":
            return None
        return certificate_end(raw, host)


def check_certificate(end: datetime.datetime | None, warn_days: int,
                      now: datetime.datetime | None = None) -> dict[str, Any]:
    """The postgres_certificate check from the end of the served certificate."""
    return check_served_certificate("postgres_certificate", end, warn_days, now)


def collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    result = new_result(postgres_endpoint(params))
    try:
        conn = connect(params)
    except Exception as exc:  # an unreachable server is a finding
        names = ["postgres_role", "postgres_replication"] + [f"postgres_table:{t}" for t in params["tables"]] + \
            ["postgres_connections", "postgres_wal_archiving", "postgres_long_transactions"]
        if params.get("fenced"):
            result["checks"].append(ok("postgres_fenced", f"{postgres_endpoint(params)}: fenced by a DR switch (does "
                                       "not take the application's login: stopped read-only, or its login forbidden);"
                                       " it is re-seeded as a standby before a failback", "stopped",
                                       "not a primary"))
            result["checks"].extend(skip_all(names, "fenced by a DR switch"))
            return finish(result)
        result["checks"].append(fail("postgres_reachable", describe_postgres_error(exc, params), False, True))
        result["checks"].extend(skip_all(names, "PostgreSQL is unreachable"))
        return finish(result)
    try:
        facts = gather(conn, params)
    except Exception as exc:  # e.g. a permission error on a catalog view
        result["checks"].append(fail("postgres_reachable", f"{postgres_endpoint(params)}: connected but a health "
                                     f"query failed: {' '.join(str(exc).split())}", True, True))
        return finish(result)
    finally:
        conn.close()
    result["checks"].append(ok("postgres_reachable", f"reachable, {facts['connections']} connections", True, True))
    if params.get("fenced") and not facts["in_recovery"] and fenced_over_the_network(facts):
        # A read-only login (validate's) still answers on a primary the remote fence left running: it takes no write.
        result["checks"].append(ok("postgres_fenced", f"{postgres_endpoint(params)}: fenced by a DR switch over the "
                                   "network (new transactions read-only, no writer may log in); it is re-seeded as a "
                                   "standby before a failback", "fenced primary", "not writable"))
        result["checks"].extend(skip_all(
            ["postgres_role", "postgres_replication"] + [f"postgres_table:{t}" for t in params["tables"]]
            + ["postgres_connections", "postgres_wal_archiving", "postgres_long_transactions"],
            "fenced by a DR switch"))
        result["role"], result["read_only"] = "primary", True
        result["position"] = facts.get("position", {})
        return finish(result)
    checks, standbys = evaluate(facts, params)
    if params.get("postgres_sslmode") in ("verify-ca", "verify-full"):
        try:
            end = served_certificate_end(params["postgres_host"], params["postgres_port"],
                                         params.get("connect_timeout") or 5)
            checks.append(check_certificate(end, params["certificate_warn_days"]))
        except (OSError, ValueError) as exc:
            checks.append(warn("postgres_certificate", f"the server certificate could not be read: {exc}"))
    result["checks"].extend(checks)
    result["standbys"] = standbys
    result["role"] = "standby" if facts["in_recovery"] else "primary"
    # A primary whose new transactions are read-only (default_transaction_read_only, as a remote fence leaves it)
    # takes no application write: a DR verification does not count it as writable.
    result["read_only"] = facts.get("read_only", False)
    result["position"] = facts.get("position", {})
    return finish(result)


def main() -> None:
    run_health_module(
        argument_spec(
            POSTGRES_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            expected_role={"type": "str", "choices": ["any", "primary", "standby"], "default": "any"},
            min_standbys={"type": "int", "default": 0},
            fenced={"type": "bool", "default": False},
            writer_logins={"type": "list", "elements": "str", "default": []},
            certificate_warn_days={"type": "int", "default": 30},
            max_replication_lag_bytes={"type": "int", "default": 16777216},
            max_replication_lag_seconds={"type": "float", "default": 30.0},
            tables={"type": "list", "elements": "str", "default": list(DEFAULT_TABLES)},
            partition_column={"type": "str", "default": "timestamp"},
            connections_warn_percent={"type": "float", "default": 80.0},
            connections_fail_percent={"type": "float", "default": 90.0},
            max_transaction_seconds={"type": "float", "default": 300.0},
            check_archiving={"type": "bool", "default": True},
        ),
        lambda params: collect(params, postgres_connect), needs=("psycopg",),
        ports=("postgres_port",), positive=("connect_timeout", "max_transaction_seconds"),
        non_negative=("min_standbys", "max_replication_lag_bytes", "max_replication_lag_seconds"),
        percents=("connections_warn_percent", "connections_fail_percent"))


if __name__ == "__main__":
    main()
