"""The health modules against real Redis, PostgreSQL (primary + streaming standby), Prometheus and the
synthetic workload: no false alarm on the healthy platform, and each fault of the matrix turns the
relevant check red with a message naming the cause.

The modules' collect() is called in process with the real clients (postgres_connect, redis_client,
http_get), the same code main() runs; the Ansible layer is covered by test_validate.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import (
    AGENTS,
    PostgresServer,
    PrometheusServer,
    RedisServer,
    WorkloadProcess,
    load_library_module,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow]

redis_info = load_library_module("sapphire_redis_info")
postgres_info = load_library_module("sapphire_postgres_info")
heartbeat_info = load_library_module("sapphire_heartbeat_info")
breaker_info = load_library_module("sapphire_circuit_breaker_info")
market_info = load_library_module("sapphire_market_data_info")
risk_info = load_library_module("sapphire_risk_info")
alerts_info = load_library_module("sapphire_alerts_info")
coordinator_info = load_library_module("sapphire_coordinator_info")


def redis_params(server: RedisServer, **extra: Any) -> dict[str, Any]:
    return {"redis_host": "127.0.0.1", "redis_port": server.port, "redis_password": server.password,
            "redis_username": None, "redis_db": 0, "redis_tls": False, "redis_tls_ca_path": None,
            "redis_tls_verify": True, "connect_timeout": 2.0, **extra}


def pg_params(server: PostgresServer, **extra: Any) -> dict[str, Any]:
    return {**server.params(), "postgres_sslrootcert": None, "connect_timeout": 3.0, **extra}


REDIS_DEFAULTS = {"expected_role": "primary", "min_replicas": 0, "max_replication_lag_bytes": 1048576,
                  "max_replication_lag_seconds": 30.0, "memory_warn_percent": 80.0, "memory_fail_percent": 90.0,
                  "expected_eviction_policy": "allkeys-lru", "require_aof": True}
PG_DEFAULTS = {"expected_role": "any", "min_standbys": 0, "max_replication_lag_bytes": 16777216,
               "max_replication_lag_seconds": 30.0, "tables": ["trades", "agent_decisions", "signals", "liquidations",
                                                               "whale_transactions"],
               "partition_column": "timestamp", "connections_warn_percent": 80.0, "connections_fail_percent": 90.0,
               "max_transaction_seconds": 300.0, "check_archiving": True}
HB_DEFAULTS = {"max_age": 60.0, "halt_status": "warn", "check_unexpected": True, "key_prefix": "sapphire"}
RISK_DEFAULTS = {"loss_window": 3600.0, "max_hourly_loss": 1000.0, "max_daily_loss_percent": 5.0,
                 "check_daily_loss": True, "key_prefix": "sapphire"}


def run_redis(server: RedisServer, **extra: Any) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import redis_client

    return redis_info.collect(redis_params(server, **{**REDIS_DEFAULTS, **extra}), redis_client)


def run_postgres(server: PostgresServer, **extra: Any) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import postgres_connect

    return postgres_info.collect(pg_params(server, **{**PG_DEFAULTS, **extra}), postgres_connect)


def run_heartbeats(server: RedisServer, agents: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import redis_client

    return heartbeat_info.collect(redis_params(server, **{**HB_DEFAULTS, **extra}), agents, redis_client)


def run_breakers(server: RedisServer) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import redis_client

    params = redis_params(server, expected=["exchange", "market_data"], half_open_status="warn", key_prefix="sapphire")
    return breaker_info.collect(params, redis_client)


def run_market(server: PostgresServer) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import postgres_connect

    params = pg_params(server, symbols=[], max_age=300.0, max_age_overrides={}, lookback=86400.0)
    return market_info.collect(params, postgres_connect)


def run_risk(pg: PostgresServer, redis_server: RedisServer) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import postgres_connect, redis_client

    params = {**pg_params(pg), **redis_params(redis_server), **RISK_DEFAULTS}
    return risk_info.collect(params, postgres_connect, redis_client)


def run_positions(pg: PostgresServer, redis_server: RedisServer) -> dict[str, Any]:
    from ansible.module_utils.sapphire_connections import postgres_connect, redis_client
    from ansible.module_utils.sapphire_trading import positions_collect

    params = {**pg_params(pg), **redis_params(redis_server), "key_prefix": "sapphire", "positions_tolerance": 1e-6,
              "trades_retention_days": 0}
    return positions_collect(params, redis_client, postgres_connect)


def run_alerts(prometheus_url: str) -> dict[str, Any]:
    return alerts_info.collect({"url": prometheus_url, "ignore_alerts": ["Watchdog"], "connect_timeout": 3.0,
                                "validate_certs": True, "ca_path": None})


def run_coordinator(url: str) -> dict[str, Any]:
    return coordinator_info.collect({"url": url, "connect_timeout": 3.0, "validate_certs": True, "ca_path": None,
                                     "required_metrics": ["portfolio_value", "trading_signals_total",
                                                          "agent_activity_score", "circuit_breaker_state"]})


def check(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in result["checks"] if item["name"] == name)


def red(result: dict[str, Any], name: str, phrase: str) -> None:
    """The check failed, the module says the target is unhealthy, and the message names the cause."""
    item = check(result, name)
    assert item["status"] == "fail", item
    assert result["healthy"] is False
    assert phrase.lower() in item["msg"].lower(), item["msg"]
    assert any(phrase.lower() in problem.lower() for problem in result["problems"])


# ---------------------------------------------------------------- healthy platform: no false alarm
def test_healthy_platform_has_no_false_alarm(platform: dict[str, Any]) -> None:
    redis_server, pg, standby = platform["redis"], platform["postgres"], platform["standby"]
    results = {
        "redis": run_redis(redis_server),
        "postgres": run_postgres(pg, expected_role="primary", min_standbys=1),
        "standby": run_postgres(standby, expected_role="standby"),
        "heartbeats": run_heartbeats(redis_server, AGENTS),
        "breakers": run_breakers(redis_server),
        "market": run_market(pg),
        "risk": run_risk(pg, redis_server),
        "positions": run_positions(pg, redis_server),
        "alerts": run_alerts(platform["prometheus"].url),
        "coordinator": run_coordinator(platform["workload"].url),
    }
    for name, result in results.items():
        assert result["healthy"] is True, (name, result["problems"])
        assert result["problems"] == [], (name, result["problems"])
        assert result["changed"] is False
    assert check(results["heartbeats"], "heartbeat:volatility")["status"] == "skipped"  # replicas 0
    assert {c["name"] for c in results["market"]["checks"]} >= {"market_data:BTC/USDT", "market_data:ETH/USDT"}
    assert results["postgres"]["standbys"][0]["state"] == "streaming"


# ---------------------------------------------------------------- Redis faults
def test_redis_down(throwaway_redis: RedisServer) -> None:
    throwaway_redis.stop()
    red(run_redis(throwaway_redis), "redis_reachable", "cannot connect")
    red(run_heartbeats(throwaway_redis, AGENTS), "redis_reachable", "cannot connect")


def test_wrong_redis_password(redis_server: RedisServer) -> None:
    params = redis_params(redis_server, **REDIS_DEFAULTS)
    params["redis_password"] = "not-the-password"
    from ansible.module_utils.sapphire_connections import redis_client

    result = redis_info.collect(params, redis_client)
    red(result, "redis_reachable", "check redis_password")
    assert "not-the-password" not in json.dumps(result)


def test_aof_off(throwaway_redis: RedisServer) -> None:
    assert run_redis(throwaway_redis)["healthy"] is True
    throwaway_redis.client().config_set("appendonly", "no")
    red(run_redis(throwaway_redis), "redis_aof", "appendonly no")


# ---------------------------------------------------------------- PostgreSQL faults
def test_postgres_down(throwaway_postgres: PostgresServer) -> None:
    assert run_postgres(throwaway_postgres)["healthy"] is True
    throwaway_postgres.stop()
    red(run_postgres(throwaway_postgres), "postgres_reachable", "cannot connect")
    red(run_market(throwaway_postgres), "postgres_reachable", "cannot connect")


def test_missing_and_unpartitioned_tables(throwaway_postgres: PostgresServer) -> None:
    with throwaway_postgres.connect() as conn:
        conn.execute("DROP TABLE whale_transactions")
        conn.execute("DROP TABLE signals")
        conn.execute("CREATE TABLE signals (timestamp timestamptz NOT NULL, symbol text)")
    result = run_postgres(throwaway_postgres)
    red(result, "postgres_table:whale_transactions", "whale_transactions is missing")
    red(result, "postgres_table:signals", "not time-partitioned")
    assert check(result, "postgres_table:trades")["status"] == "ok"


def test_lagging_standby(postgres_server: PostgresServer, postgres_standby: PostgresServer) -> None:
    """Replay paused on a real streaming standby while the primary writes ~1 MiB of WAL."""
    postgres_standby.psql("SELECT pg_wal_replay_pause()", "postgres")
    try:
        with postgres_server.connect() as conn:
            conn.execute("INSERT INTO liquidations SELECT now(), 'LAG/TEST', 'long', g, 1 "
                         "FROM generate_series(1, 8000) g")
            conn.execute("DELETE FROM liquidations WHERE symbol = 'LAG/TEST'")
        wait_for(lambda: int(postgres_server.psql(
            "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint "
            "FROM pg_stat_replication", "postgres")) > 65536, 20, "replay lag on the primary")
        primary = run_postgres(postgres_server, expected_role="primary", min_standbys=1,
                               max_replication_lag_bytes=65536)
        red(primary, "postgres_replication", "lags")
        assert primary["standbys"][0]["lag_bytes"] > 65536
        standby = run_postgres(postgres_standby, expected_role="standby", max_replication_lag_bytes=65536)
        red(standby, "postgres_replication", "replay lag")
    finally:
        postgres_standby.psql("SELECT pg_wal_replay_resume()", "postgres")
    wait_for(lambda: run_postgres(postgres_server, expected_role="primary", min_standbys=1,
                                  max_replication_lag_bytes=65536)["healthy"], 30, "standby caught up")


# ---------------------------------------------------------------- trading faults
def test_stale_and_missing_heartbeats(platform: dict[str, Any]) -> None:
    redis_server: RedisServer = platform["redis"]
    client = redis_server.client()
    client.hset("sapphire:agent:arbitrage:heartbeat",
                mapping={"ts": str(time.time() - 600), "status": "running", "tier": "standard", "version": "old"})
    try:
        agents = [*AGENTS, {"name": "arbitrage", "tier": "standard", "replicas": 1},
                  {"name": "market-maker", "tier": "heavy", "replicas": 1}]
        result = run_heartbeats(redis_server, agents)
        red(result, "heartbeat:arbitrage", "stale")
        red(result, "heartbeat:market-maker", "no heartbeat")
        assert result["stale"] == ["arbitrage"]
        assert result["missing"] == ["market-maker"]
        assert check(result, "heartbeat:momentum")["status"] == "ok"
        unexpected = run_heartbeats(redis_server, AGENTS)
        assert unexpected["unexpected"] == ["arbitrage"]
        assert check(unexpected, "heartbeat_unexpected")["status"] == "warn"
    finally:
        client.delete("sapphire:agent:arbitrage:heartbeat")


def test_coordinator_health_500(workload: WorkloadProcess) -> None:
    workload.set_fault({"health_status": 500})
    try:
        result = run_coordinator(workload.url)
        red(result, "coordinator_health", "HTTP 500")
        assert check(result, "coordinator_metrics")["status"] == "ok"
    finally:
        workload.set_fault({})
    assert run_coordinator(workload.url)["healthy"] is True


def test_open_circuit_breaker(platform: dict[str, Any]) -> None:
    client = platform["redis"].client()
    saved = client.hgetall("sapphire:circuit:exchange")
    client.hset("sapphire:circuit:exchange", mapping={"state": "open", "since": str(time.time() - 42)})
    try:
        time.sleep(1.2)  # two workload rounds: it must not close a breaker somebody opened
        result = run_breakers(platform["redis"])
        red(result, "circuit:exchange", "exchange is OPEN")
        assert result["open"] == ["exchange"]
    finally:
        client.hset("sapphire:circuit:exchange", mapping=saved)


def test_firing_critical_alert(firing_prometheus: PrometheusServer) -> None:
    red(run_alerts(firing_prometheus.url), "alerts_critical", "SyntheticCritical")


def test_unreachable_prometheus_fails(prometheus_server: PrometheusServer) -> None:
    red(run_alerts("http://127.0.0.1:1"), "prometheus_reachable", "cannot read alerts")


def test_loss_above_the_limit(platform: dict[str, Any]) -> None:
    pg, redis_server = platform["postgres"], platform["redis"]
    with pg.connect() as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, pnl, order_id) VALUES "
                     "(now(), 'BTC/USDT', 'scalping', 'sell', 1, 60000, -1500, 'loss-drill')")
    client = redis_server.client()
    saved = client.hgetall("sapphire:portfolio")
    client.hset("sapphire:portfolio", mapping={"value": "93000", "day_open_value": "100000"})
    try:
        result = run_risk(pg, redis_server)
        red(result, "risk_window_pnl", "exceeds the limit of 1000 USD")
        assert result["breaching_agents"][0]["agent"] == "scalping"
        assert result["breaching_symbols"][0]["symbol"] == "BTC/USDT"
        red(result, "risk_daily_loss", "above the 5 % limit")
    finally:
        with pg.connect() as conn:
            conn.execute("DELETE FROM trades WHERE order_id = 'loss-drill'")
        client.hset("sapphire:portfolio", mapping=saved)
    assert run_risk(pg, redis_server)["healthy"] is True


def test_workload_once_writes_one_round(tmp_path: Any, throwaway_redis: RedisServer,
                                        postgres_server: PostgresServer) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps([{"name": "solo", "strategy": "momentum", "tier": "standard", "replicas": 1},
                                  {"name": "idle", "strategy": "pairs", "tier": "standard", "replicas": 0}]))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "workload"), SAPPHIRE_REDIS_PASSWORD=throwaway_redis.password,
               SAPPHIRE_POSTGRES_DSN=postgres_server.dsn())
    proc = subprocess.run([sys.executable, "-m", "sapphire_workload", "--once", "--agents", str(agents),
                           "--redis-url", f"redis://127.0.0.1:{throwaway_redis.port}/0", "--release", "r1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    client = throwaway_redis.client()
    assert client.hget("sapphire:agent:solo:heartbeat", "version") == "r1"
    assert not client.exists("sapphire:agent:idle:heartbeat")
    assert client.hget("sapphire:circuit:exchange", "state") == "closed"
    assert float(client.hget("sapphire:portfolio", "day_open_value")) > 0
    assert throwaway_redis.password not in proc.stderr


def test_positions_agree_while_the_workload_trades_and_a_drifted_one_is_named(platform: dict[str, Any]) -> None:
    redis_server, pg = platform["redis"], platform["postgres"]
    client = redis_server.client()
    wait_for(lambda: len(list(client.scan_iter(match="sapphire:positions:*"))) > 0, 30, "the workload keeps positions")
    for _ in range(5):  # reconciled repeatedly while the workload keeps trading
        result = run_positions(pg, redis_server)
        assert result["healthy"] is True, result["problems"]
        assert {item["status"] for item in result["checks"]} == {"ok"}
        time.sleep(0.5)
    key = sorted(client.scan_iter(match="sapphire:positions:*"))[0]
    agent = key.split(":", 2)[2]
    symbol = next(field for field in client.hkeys(key) if not field.startswith("_"))
    client.hincrbyfloat(key, symbol, 0.5)  # a position that no trade explains (a lost or duplicated update)
    try:
        red(run_positions(pg, redis_server), f"positions:{agent}", f"{symbol} is ")
        assert f"agent {agent}" in check(run_positions(pg, redis_server), f"positions:{agent}")["msg"]
    finally:
        client.hincrbyfloat(key, symbol, -0.5)
    assert run_positions(pg, redis_server)["healthy"] is True


def test_the_gate_values_the_workloads_open_positions_at_the_newest_traded_prices(platform: dict[str, Any]) -> None:
    """sapphire_trading_gate against the stores the workload trades on: the gross notional is every open position at
    its symbol's newest price in trades; a threshold below it refuses naming the largest agent, one above allows."""
    from ansible.module_utils.sapphire_connections import postgres_connect, redis_client
    from ansible.module_utils.sapphire_gate import gate_collect

    redis_server, pg = platform["redis"], platform["postgres"]
    client = redis_server.client()
    wait_for(lambda: len(list(client.scan_iter(match="sapphire:positions:*"))) > 0, 30, "the workload keeps positions")
    params = {**pg_params(pg), **redis_params(redis_server), "key_prefix": "sapphire", "operation": "release 2",
              "market_hours": [], "override_reason": ""}
    result = gate_collect({**params, "max_open_notional": 1e15}, redis_client, postgres_connect)
    exposure = result["exposure"]
    assert result["allowed"] and exposure["measured"] and exposure["total"] > 0, result

    # A position of our own at a price of our own: valued exactly (|-2| * 150), beside the workload's.
    with pg.connect() as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, pnl, order_id) "
                     "VALUES (now(), 'GATE/USDT', 'gate-probe', 'sell', 2, 150, 0, 'gate-probe')")
    client.hset("sapphire:positions:gate-probe", mapping={"GATE/USDT": "-2", "_since": "t", "_as_of": "t"})
    try:
        probed = gate_collect({**params, "max_open_notional": 1e15}, redis_client, postgres_connect)["exposure"]
        assert probed["by_agent"]["gate-probe"] == 300.0, probed
        refused = gate_collect({**params, "max_open_notional": 1.0}, redis_client, postgres_connect)
        assert not refused["allowed"] and not refused["overridden"]
        assert "above the 1.00 USD threshold (largest: " in refused["msg"], refused["msg"]
    finally:
        client.delete("sapphire:positions:gate-probe")
        with pg.connect() as conn:
            conn.execute("DELETE FROM trades WHERE agent_id = 'gate-probe'")
