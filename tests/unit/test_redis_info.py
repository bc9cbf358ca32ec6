"""sapphire_redis_info: each check on healthy and unhealthy INFO snapshots, and the reachability paths."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from conftest import load_module

mod = load_module("sapphire_redis_info")

PARAMS: dict[str, Any] = {
    "redis_host": "127.0.0.1",
    "redis_port": 6379,
    "redis_password": "secret",
    "connect_timeout": 1.0,
    "expected_role": "any",
    "min_replicas": 0,
    "max_replication_lag_bytes": 1000,
    "max_replication_lag_seconds": 30.0,
    "memory_warn_percent": 80.0,
    "memory_fail_percent": 90.0,
    "expected_eviction_policy": "allkeys-lru",
    "require_aof": True,
}
HEALTHY = {
    "role": "master",
    "redis_version": "7.0.15",
    "connected_slaves": 0,
    "master_repl_offset": 5000,
    "used_memory": 10 * 2**20,
    "maxmemory": 100 * 2**20,
    "maxmemory_policy": "allkeys-lru",
    "aof_enabled": 1,
    "aof_last_write_status": "ok",
    "aof_last_bgrewrite_status": "ok",
    "rdb_last_bgsave_status": "ok",
}


def info(**changes: Any) -> dict[str, Any]:
    return {**HEALTHY, **changes}


def params(**changes: Any) -> dict[str, Any]:
    return {**PARAMS, **changes}


def test_healthy_snapshot_is_all_ok() -> None:
    assert [c["status"] for c in mod.evaluate(info(), params())] == ["ok"] * 6


@pytest.mark.parametrize(
    ("snapshot", "expected", "status"),
    [
        (info(), "primary", "ok"),
        (info(), "any", "ok"),
        (info(role="slave"), "primary", "fail"),
        (info(), "replica", "fail"),
    ],
)
def test_role(snapshot: dict[str, Any], expected: str, status: str) -> None:
    assert mod.check_role(snapshot, expected)["status"] == status


REPLICA_OK = {"ip": "10.0.0.2", "port": 6380, "state": "online", "offset": 4900, "lag": 0}


@pytest.mark.parametrize(
    ("snapshot", "extra", "status", "phrase"),
    [
        (info(connected_slaves=1, slave0=REPLICA_OK), {}, "ok", "1 replica(s) online"),
        (info(connected_slaves=1, slave0={**REPLICA_OK, "offset": 1000}), {}, "fail", "lags"),
        (info(connected_slaves=1, slave0={**REPLICA_OK, "lag": 99}), {}, "fail", "acknowledged 99s ago"),
        (info(connected_slaves=1, slave0={**REPLICA_OK, "state": "wait_bgsave"}), {}, "fail", "is wait_bgsave"),
        (info(), {"min_replicas": 1}, "fail", "0 online replica(s), 1 required"),
        (info(), {}, "ok", "without replicas"),
    ],
)
def test_replication_on_a_primary(snapshot: dict[str, Any], extra: dict[str, Any], status: str, phrase: str) -> None:
    check = mod.check_replication(snapshot, params(**extra))
    assert check["status"] == status
    assert phrase in check["msg"]


REPLICA_INFO = info(
    role="slave",
    master_host="10.0.0.1",
    master_port=6379,
    master_link_status="up",
    master_last_io_seconds_ago=1,
    master_sync_in_progress=0,
    slave_repl_offset=4950,
)


@pytest.mark.parametrize(
    ("snapshot", "primary_offset", "status", "phrase"),
    [
        (REPLICA_INFO, 5000, "ok", "lag 50B"),
        (REPLICA_INFO, 9000, "fail", "lags primary"),
        (
            {**REPLICA_INFO, "master_link_status": "down", "master_link_down_since_seconds": 12},
            None,
            "fail",
            "is down for 12s",
        ),
        ({**REPLICA_INFO, "master_last_io_seconds_ago": 45}, 5000, "fail", "no data from primary"),
        ({**REPLICA_INFO, "master_sync_in_progress": 1}, 5000, "warn", "resynchronisation"),
        (REPLICA_INFO, None, "warn", "lag in bytes unknown"),
    ],
)
def test_replication_on_a_replica(
    snapshot: dict[str, Any], primary_offset: int | None, status: str, phrase: str
) -> None:
    check = mod.check_replication(snapshot, params(), primary_offset, "refused" if primary_offset is None else None)
    assert check["status"] == status
    assert phrase in check["msg"]


@pytest.mark.parametrize(
    ("used", "limit", "status"), [(10, 100, "ok"), (85, 100, "warn"), (95, 100, "fail"), (10, 0, "warn")]
)
def test_memory_against_maxmemory(used: int, limit: int, status: str) -> None:
    assert mod.check_memory(info(used_memory=used, maxmemory=limit), params())["status"] == status


@pytest.mark.parametrize(
    ("policy", "expected", "status"),
    [("allkeys-lru", "allkeys-lru", "ok"), ("noeviction", "allkeys-lru", "fail"), ("noeviction", "", "skipped")],
)
def test_eviction_policy(policy: str, expected: str, status: str) -> None:
    assert mod.check_eviction(info(maxmemory_policy=policy), expected)["status"] == status


@pytest.mark.parametrize(
    ("changes", "require", "status", "phrase"),
    [
        ({}, True, "ok", "enabled"),
        ({"aof_enabled": 0}, True, "fail", "appendonly no"),
        ({"aof_enabled": 0}, False, "skipped", "not required"),
        ({"aof_last_write_status": "err"}, True, "fail", "aof_last_write_status=err"),
        ({"aof_last_bgrewrite_status": "err"}, True, "fail", "aof_last_bgrewrite_status=err"),
    ],
)
def test_aof(changes: dict[str, Any], require: bool, status: str, phrase: str) -> None:
    check = mod.check_aof(info(**changes), require)
    assert check["status"] == status
    assert phrase in check["msg"]


@pytest.mark.parametrize(("bgsave", "status"), [("ok", "ok"), ("err", "fail")])
def test_rdb_last_save(bgsave: str, status: str) -> None:
    assert mod.check_rdb(info(rdb_last_bgsave_status=bgsave))["status"] == status


class FakeRedis:
    def __init__(self, snapshot: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.snapshot, self.error = snapshot, error

    def ping(self) -> bool:
        if self.error:
            raise self.error
        return True

    def info(self, section: str = "all") -> dict[str, Any]:
        return self.snapshot or {}


@pytest.mark.parametrize(
    ("error", "phrase"),
    [
        (redis.exceptions.ConnectionError("Connection refused"), "is redis-server running"),
        (redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair"), "check redis_password"),
        (redis.exceptions.TimeoutError("Timeout"), "timed out"),
    ],
)
def test_unreachable_server_is_a_failing_check_not_a_crash(error: Exception, phrase: str) -> None:
    result = mod.collect(params(), lambda _p: FakeRedis(error=error))
    assert result["healthy"] is False
    assert result["checks"][0]["name"] == "redis_reachable"
    assert result["checks"][0]["status"] == "fail"
    assert phrase in result["checks"][0]["msg"]
    assert {c["status"] for c in result["checks"][1:]} == {"skipped"}
    assert "secret" not in str(result)


def test_replica_reads_the_primary_offset_with_the_same_credentials() -> None:
    seen: list[tuple[str, int]] = []

    def connect(p: dict[str, Any]) -> FakeRedis:
        seen.append((p["redis_host"], p["redis_port"]))
        if p["redis_host"] == "10.0.0.1":
            return FakeRedis({"master_repl_offset": 999999})
        return FakeRedis(REPLICA_INFO)

    result = mod.collect(params(expected_role="replica"), connect)
    assert ("10.0.0.1", 6379) in seen
    replication = next(c for c in result["checks"] if c["name"] == "redis_replication")
    assert replication["status"] == "fail"
    assert result["healthy"] is False
