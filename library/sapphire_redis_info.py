#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_redis_info
short_description: Check the health of a Sapphire Redis server (reachability, replication, memory, persistence)
description:
  - Connects to one Redis server and reports, as data, whether it is reachable with the given
    credentials, its replication role, the replication link and lag, memory use against
    C(maxmemory), the eviction policy, and the state of AOF and RDB persistence including the
    last write, rewrite and save errors.
  - On a primary the lag of every connected replica is the difference between the primary's
    replication offset and the replica's acknowledged offset. On a replica the module also reads
    the primary's offset (same credentials) to compute the lag in bytes.
  - An unreachable server or a failed login is a failing check, never a module failure.
    The module fails only on bad parameters or a missing Python library.
version_added: "1.0.0"
author: sapphire-ops
options:
  expected_role:
    description: Role the server must have; C(any) reports it without judging.
    type: str
    choices: [any, primary, replica]
    default: any
  min_replicas:
    description: On a primary, the number of online replicas below which the check fails.
    type: int
    default: 0
  max_replication_lag_bytes:
    description: Replication lag in bytes above which the replication check fails.
    type: int
    default: 1048576
  max_replication_lag_seconds:
    description: Seconds since the last interaction with the primary (or the replica's last ack)
      above which the replication check fails.
    type: float
    default: 30
  memory_warn_percent:
    description: C(used_memory) as a percentage of C(maxmemory) at which the memory check warns.
    type: float
    default: 80
  memory_fail_percent:
    description: C(used_memory) as a percentage of C(maxmemory) at which the memory check fails
      (the seed's HighMemoryUsage is 90 %).
    type: float
    default: 90
  expected_eviction_policy:
    description: Required C(maxmemory-policy); an empty string skips the check.
    type: str
    default: allkeys-lru
  require_aof:
    description: Fail when the append-only file is disabled.
    type: bool
    default: true
  certificate_warn_days:
    description:
      - With O(redis_tls) and O(redis_tls_verify), the certificate the server presents is read (a TLS handshake of its
        own) and its end checked (C(redis_certificate)) - C(fail) when it has expired, C(warn) within this many days.
    type: int
    default: 30
extends_documentation_fragment:
  - sapphire.health
  - sapphire.redis
  - sapphire.timeout
requirements:
  - redis (redis-py) >= 4
notes:
  - Reads C(INFO) only; it issues no C(CONFIG) command, so it works where CONFIG is renamed.
seealso:
  - module: sapphire_heartbeat_info
"""

EXAMPLES = r"""
- name: Check the primary Redis of the region
  sapphire_redis_info:
    redis_host: 127.0.0.1
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    expected_role: primary
  register: redis_health

- name: Check the DR replica, which must be online and close to the primary
  sapphire_redis_info:
    redis_port: 16380
    redis_password: "{{ redis_password }}"
    expected_role: replica
    max_replication_lag_bytes: 65536
"""

RETURN = r"""
healthy:
  description: True when no check failed (warnings do not make it false).
  returned: always
  type: bool
  sample: true
target:
  description: The server that was checked.
  returned: always
  type: str
  sample: redis 127.0.0.1:16379
checks:
  description: One entry per check, in a fixed order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: >-
        Check name: redis_reachable, redis_role, redis_replication, redis_memory,
        redis_eviction_policy, redis_aof, redis_rdb.
      type: str
    status:
      description: ok, warn, fail or skipped.
      type: str
    observed:
      description: What was measured.
      type: raw
    threshold:
      description: What it was compared with.
      type: raw
    msg:
      description: One sentence about the outcome.
      type: str
  sample:
    - {name: redis_aof, status: fail, observed: {aof_enabled: 0}, threshold: enabled,
       msg: "append-only file is disabled"}
problems:
  description: Sentences an operator can act on, one per failing or warning check.
  returned: always
  type: list
  elements: str
info:
  description: Selected fields of C(INFO) (role, offsets, memory, persistence).
  returned: when the server was reachable
  type: dict
"""

import socket
from collections.abc import Callable
from typing import Any

from ansible.module_utils.sapphire_connections import (
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    describe_redis_error,
    redis_client,
    redis_endpoint,
    run_health_module,
)
from ansible.module_utils.sapphire_health import (
    by_level,
    certificate_end,
    check_served_certificate,
    fail,
    finish,
    fmt_bytes,
    new_result,
    ok,
    skip_all,
    skipped,
    warn,
)

CHECKS = ["redis_reachable", "redis_role", "redis_replication", "redis_memory", "redis_eviction_policy",
          "redis_aof", "redis_rdb"]
ROLES = {"master": "primary", "slave": "replica"}
INFO_FIELDS = ("role", "redis_version", "connected_slaves", "master_repl_offset", "second_repl_offset",
               "slave_repl_offset",
               "master_host", "master_port", "master_link_status", "master_last_io_seconds_ago",
               "master_sync_in_progress", "master_link_down_since_seconds", "used_memory", "maxmemory",
               "maxmemory_policy", "aof_enabled", "aof_rewrite_in_progress", "aof_last_write_status",
               "aof_last_bgrewrite_status", "rdb_last_bgsave_status", "rdb_last_save_time",
               "rdb_changes_since_last_save", "loading")


def check_role(info: dict[str, Any], expected: str) -> dict[str, Any]:
    role = ROLES.get(info.get("role", ""), info.get("role", "unknown"))
    if expected in ("any", role):
        return ok("redis_role", f"role is {role}", role, expected)
    return fail("redis_role", f"role is {role} but {expected} was expected; check the replication setup "
                f"(REPLICAOF) of this server", role, expected)


def replicas_of(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The slaveN entries of INFO replication, in order."""
    found = []
    for index in range(int(info.get("connected_slaves") or 0) + 16):
        entry = info.get(f"slave{index}")
        if isinstance(entry, dict):
            found.append(entry)
    return found


def check_replication(info: dict[str, Any], params: dict[str, Any], primary_offset: int | None = None,
                      primary_error: str | None = None) -> dict[str, Any]:
    max_bytes = params["max_replication_lag_bytes"]
    max_seconds = params["max_replication_lag_seconds"]
    threshold = {"bytes": max_bytes, "seconds": max_seconds}
    role = ROLES.get(info.get("role", ""), "unknown")
    if role == "primary":
        offset = int(info.get("master_repl_offset") or 0)
        observed = []
        bad = []
        for replica in replicas_of(info):
            name = f"{replica.get('ip')}:{replica.get('port')}"
            lag_bytes = max(0, offset - int(replica.get("offset") or 0))
            lag_seconds = float(replica.get("lag") or 0)
            state = replica.get("state", "unknown")
            observed.append({"replica": name, "state": state, "lag_bytes": lag_bytes, "lag_seconds": lag_seconds})
            if state != "online":
                bad.append(f"replica {name} is {state}")
            elif lag_bytes > max_bytes:
                bad.append(f"replica {name} lags {fmt_bytes(lag_bytes)} (> {fmt_bytes(max_bytes)})")
            elif lag_seconds > max_seconds:
                bad.append(f"replica {name} last acknowledged {lag_seconds:g}s ago (> {max_seconds:g}s)")
        online = sum(1 for item in observed if item["state"] == "online")
        if online < params["min_replicas"]:
            bad.insert(0, f"{online} online replica(s), {params['min_replicas']} required")
        if bad:
            return fail("redis_replication", "; ".join(bad), observed, threshold)
        if not observed:
            return ok("redis_replication", "primary without replicas (none required)", observed, threshold)
        return ok("redis_replication", f"{online} replica(s) online within the lag limits", observed, threshold)
    if role == "replica":
        link = info.get("master_link_status", "unknown")
        upstream = f"{info.get('master_host')}:{info.get('master_port')}"
        io_ago = float(info.get("master_last_io_seconds_ago") if info.get("master_last_io_seconds_ago") is not None
                       else -1)
        observed = {"primary": upstream, "link": link, "last_io_seconds_ago": io_ago}
        if link != "up":
            down = info.get("master_link_down_since_seconds")
            return fail("redis_replication", f"replication link to {upstream} is {link}"
                        + (f" for {down}s" if down not in (None, -1) else "")
                        + "; check that the primary is up and that masterauth matches its password",
                        observed, threshold)
        if int(info.get("master_sync_in_progress") or 0):
            return warn("redis_replication", f"full resynchronisation from {upstream} in progress", observed, threshold)
        if io_ago > max_seconds:
            return fail("redis_replication", f"no data from primary {upstream} for {io_ago:g}s (> {max_seconds:g}s)",
                        observed, threshold)
        if primary_offset is None:
            return warn("redis_replication", f"link to {upstream} is up but the primary's offset could not be read "
                        f"({primary_error}); lag in bytes unknown", observed, threshold)
        lag_bytes = max(0, primary_offset - int(info.get("slave_repl_offset") or info.get("master_repl_offset") or 0))
        observed["lag_bytes"] = lag_bytes
        if lag_bytes > max_bytes:
            return fail("redis_replication", f"replica lags primary {upstream} by {fmt_bytes(lag_bytes)} "
                        f"(> {fmt_bytes(max_bytes)})", observed, threshold)
        return ok("redis_replication", f"link to {upstream} up, lag {fmt_bytes(lag_bytes)}", observed, threshold)
    return fail("redis_replication", f"unknown replication role {info.get('role')!r}", info.get("role"), threshold)


def check_memory(info: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    used = int(info.get("used_memory") or 0)
    limit = int(info.get("maxmemory") or 0)
    if limit <= 0:
        return warn("redis_memory", f"maxmemory is not set (used {fmt_bytes(used)}); without it Redis grows until "
                    "the kernel kills it: set redis_maxmemory", {"used": used, "maxmemory": 0}, "maxmemory > 0")
    percent = round(100.0 * used / limit, 1)
    return by_level("redis_memory", percent, params["memory_warn_percent"], params["memory_fail_percent"],
                    f"memory {fmt_bytes(used)} of {fmt_bytes(limit)}", observed=percent, unit="%")


def check_eviction(info: dict[str, Any], expected: str) -> dict[str, Any]:
    policy = info.get("maxmemory_policy", "unknown")
    if not expected:
        return skipped("redis_eviction_policy", f"eviction policy {policy} (not checked)", policy, None)
    if policy == expected:
        return ok("redis_eviction_policy", f"eviction policy {policy}", policy, expected)
    return fail("redis_eviction_policy", f"eviction policy is {policy}, expected {expected}: set "
                f"maxmemory-policy {expected}", policy, expected)


def check_aof(info: dict[str, Any], require: bool) -> dict[str, Any]:
    observed = {key: info.get(key) for key in ("aof_enabled", "aof_last_write_status", "aof_last_bgrewrite_status")}
    if not int(info.get("aof_enabled") or 0):
        if require:
            return fail("redis_aof", "append-only file is disabled (appendonly no): writes since the last RDB "
                        "snapshot would be lost on restart; set appendonly yes", observed, "enabled")
        return skipped("redis_aof", "append-only file disabled (not required)", observed, None)
    errors = [f"{key}={observed[key]}" for key in ("aof_last_write_status", "aof_last_bgrewrite_status")
              if observed[key] not in (None, "ok")]
    if errors:
        return fail("redis_aof", "append-only file errors: " + ", ".join(errors) + "; check disk space and the "
                    "Redis log", observed, "ok")
    return ok("redis_aof", "append-only file enabled, last write and rewrite ok", observed, "ok")


def check_rdb(info: dict[str, Any]) -> dict[str, Any]:
    status = info.get("rdb_last_bgsave_status", "unknown")
    observed = {"rdb_last_bgsave_status": status, "rdb_last_save_time": info.get("rdb_last_save_time"),
                "rdb_changes_since_last_save": info.get("rdb_changes_since_last_save")}
    if status != "ok":
        return fail("redis_rdb", f"last RDB snapshot failed (rdb_last_bgsave_status={status}); check disk space "
                    "and permissions of the data directory", observed, "ok")
    return ok("redis_rdb", "last RDB snapshot succeeded", observed, "ok")


def evaluate(info: dict[str, Any], params: dict[str, Any], primary_offset: int | None = None,
             primary_error: str | None = None) -> list[dict[str, Any]]:
    """Every check except reachability, from one INFO snapshot."""
    return [
        check_role(info, params["expected_role"]),
        check_replication(info, params, primary_offset, primary_error),
        check_memory(info, params),
        check_eviction(info, params["expected_eviction_policy"]),
        check_aof(info, params["require_aof"]),
        check_rdb(info),
    ]


def collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Run every check against the server `connect(params)` returns a client for."""
    result = new_result(redis_endpoint(params))
    try:
        client = connect(params)
        client.ping()
        info = client.info("all")
    except Exception as exc:  # any client error is a finding about the server
        result["checks"].append(fail("redis_reachable", describe_redis_error(exc, params), False, True))
        result["checks"].extend(skip_all(CHECKS[1:], "Redis is unreachable"))
        return finish(result)
    result["checks"].append(ok("redis_reachable", f"reachable, Redis {info.get('redis_version')}", True, True))
    primary_offset, primary_error = None, None
    if ROLES.get(info.get("role", "")) == "replica" and info.get("master_link_status") == "up":
        upstream = dict(params, redis_host=info.get("master_host"), redis_port=int(info.get("master_port") or 0))
        try:
            primary_offset = int(connect(upstream).info("replication").get("master_repl_offset") or 0)
        except Exception as exc:  # the primary is checked on its own; here it only refines the lag
            primary_error = describe_redis_error(exc, upstream)
    result["checks"].extend(evaluate(info, params, primary_offset, primary_error))
    if params.get("redis_tls") and params.get("redis_tls_verify", True):
        try:
            with socket.create_connection((params["redis_host"], params["redis_port"]),
                                          timeout=params.get("connect_timeout") or 5) as raw:
                end = certificate_end(raw, params["redis_host"])
            result["checks"].append(check_served_certificate("redis_certificate", end,
                                                             params.get("certificate_warn_days") or 30))
        except (OSError, ValueError) as exc:
            result["checks"].append(warn("redis_certificate", f"the server certificate could not be read: {exc}"))
    result["info"] = {key: info.get(key) for key in INFO_FIELDS if key in info}
    return finish(result)


def main() -> None:
    run_health_module(
        argument_spec(
            REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            expected_role={"type": "str", "choices": ["any", "primary", "replica"], "default": "any"},
            min_replicas={"type": "int", "default": 0},
            max_replication_lag_bytes={"type": "int", "default": 1048576},
            max_replication_lag_seconds={"type": "float", "default": 30.0},
            memory_warn_percent={"type": "float", "default": 80.0},
            memory_fail_percent={"type": "float", "default": 90.0},
            expected_eviction_policy={"type": "str", "default": "allkeys-lru"},
            require_aof={"type": "bool", "default": True},
            certificate_warn_days={"type": "int", "default": 30},
        ),
        lambda params: collect(params, redis_client), needs=("redis",),
        ports=("redis_port",), positive=("connect_timeout",),
        non_negative=("min_replicas", "max_replication_lag_bytes", "max_replication_lag_seconds"),
        percents=("memory_warn_percent", "memory_fail_percent"))


if __name__ == "__main__":
    main()
