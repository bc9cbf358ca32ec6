"""dr-failover.yml and dr-failback.yml on real servers of a throw-away inventory.

A PostgreSQL primary with its streaming standby and a Redis primary with its replica, started
through the postgres and redis roles on free ports in a mkdtemp() directory (never the local
default's 15432/15433/16379/16380), stand for the two regions. The tests run in order, as an
operator would: a failover and a failback refused without `confirm` (the inventory's environment
name, here `test`) before anything is written, a failover refused because the standby lags more
than the RPO, a failover that promotes the DR side with the data written before it, a second run
that changes nothing, a failback that returns the roles without deleting anything, and its second run.

`DataServers` is shared with test_backup_restore.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from sapphire_testlib import PlaybookResult, postgres_admin, postgres_app, run_playbook
from sapphire_testlib import wait_for as poll

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RESERVED = {15432, 15433, 16379, 16380}
TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]

if not (PG_BIN / "postgres").exists() or not Path("/usr/bin/redis-server").exists():
    pytest.skip("postgresql-15 and redis-server are needed (make setup / tools/setup-packages)",
                allow_module_level=True)


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RESERVED and port not in ports and port >= 20000:
            ports.append(port)
    return ports


@dataclass
class DataServers:
    """Two regions of data services on this machine, made by the roles from a temporary inventory."""

    root: Path
    inventory: Path
    local_dir: Path
    ports: dict[str, int]
    secrets: dict[str, str]

    @classmethod
    def start(cls, prefix: str, clusters: dict[str, Any] | None = None) -> DataServers:
        """clusters: {"namespace": ..., "state_namespace": ...} adds the local default's two clusters
        (as existing clusters) with the local inventory's platform values: the two regions whole."""
        # Not pytest's tmp_path (0700 under /tmp/pytest-of-root): the postgres and redis users
        # must be able to enter the directory.
        root = Path(tempfile.mkdtemp(prefix=prefix))
        root.chmod(0o755)
        local_dir = root / "local"
        local_dir.mkdir(mode=0o755)
        pg_primary, pg_dr, redis_primary, redis_dr = free_ports(4)
        ports = {"pg-primary": pg_primary, "pg-dr": pg_dr, "redis-primary": redis_primary, "redis-dr": redis_dr}
        secrets = {"postgres_password": f"app-{uuid.uuid4().hex}",
                   "postgres_replication_password": f"repl:{uuid.uuid4().hex}\\x",
                   "redis_password": f"redis-{uuid.uuid4().hex}"}
        inventory = {"all": {
            "children": {
                "postgres_hosts": {"hosts": {
                    "pg-primary": {"postgres_port": pg_primary, "postgres_replication_role": "primary",
                                   "sapphire_region": "primary"},
                    "pg-dr": {"postgres_port": pg_dr, "postgres_replication_role": "standby",
                              "postgres_primary_host": "pg-primary", "sapphire_region": "dr"},
                }},
                "redis_hosts": {"hosts": {
                    "redis-primary": {"redis_port": redis_primary, "redis_replication_role": "primary",
                                      "sapphire_region": "primary"},
                    "redis-dr": {"redis_port": redis_dr, "redis_replication_role": "replica",
                                 "redis_replica_of": "redis-primary", "sapphire_region": "dr"},
                }},
            },
            # No cluster here: the platform state lives in the controller's file (said explicitly).
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                     "postgres_mode": "host", "redis_mode": "host", "sapphire_local_dir": str(local_dir),
                     "sapphire_environment": "test", "sapphire_state_store": "file", **secrets},
        }}
        if clusters:
            path = with_clusters(root, inventory, clusters)
        else:
            path = root / "hosts.yml"
            path.write_text(yaml.safe_dump(inventory))
            path.chmod(0o600)
        servers = cls(root=root, inventory=path, local_dir=local_dir, ports=ports, secrets=secrets)
        for converge in ("molecule/postgres/converge.yml", "molecule/redis/converge.yml"):
            result = servers.run(converge)
            if result.rc != 0:
                servers.stop()
                raise AssertionError(f"{converge} failed:\n{result.explain()}")
        return servers

    def run(self, playbook: str, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> PlaybookResult:
        return run_playbook(playbook, self.inventory, extra_vars=extra_vars, **kwargs)

    def pg_dir(self, host: str) -> Path:
        return self.local_dir / "postgres" / host

    def admin(self, host: str, dbname: str = "sapphire") -> psycopg.Connection:
        return postgres_admin(self.pg_dir(host), self.ports[host], dbname)

    def app(self, host: str) -> psycopg.Connection:
        return postgres_app(self.ports[host], self.secrets["postgres_password"])

    def redis(self, host: str) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[host], password=self.secrets["redis_password"],
                           decode_responses=True, socket_timeout=10)

    def state(self) -> dict[str, Any]:
        path = self.local_dir / "dr" / "state.yml"
        return yaml.safe_load(path.read_text()) if path.exists() else {}

    def stop(self) -> None:
        for host in ("pg-dr", "pg-primary"):
            data = self.pg_dir(host) / "data"
            if (data / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "stop",
                                "-m", "immediate", "-w", "-t", "60"], capture_output=True, check=False, timeout=90)
        for host in ("redis-dr", "redis-primary"):
            try:
                pid = int((self.local_dir / "redis" / host / "redis.pid").read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


LOCAL_INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "local"


def with_clusters(root: Path, inventory: dict[str, Any], clusters: dict[str, Any]) -> Path:
    """An inventory directory: the data hosts above, the local default's two clusters (existing: they
    run already) and the local inventory's group_vars, with this test's secrets, directories, namespace
    and state namespace. The state lives in the clusters (sapphire_state_store: clusters)."""
    directory = root / "inventory"
    (directory / "group_vars" / "all").mkdir(parents=True)
    variables = inventory["all"]["vars"]
    variables.pop("sapphire_state_store")
    variables.update({"sapphire_namespace": clusters["namespace"], "workload_enabled": False,
                      "sapphire_state_namespace": clusters["state_namespace"], "monitoring_mode": "kubernetes"})
    for name in ("main.yml", "agent_tiers.yml"):
        values = yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "all" / name).read_text())
        values.update({key: value for key, value in variables.items() if key in values or name == "main.yml"})
        (directory / "group_vars" / "all" / name).write_text(yaml.safe_dump(values))
    (directory / "group_vars" / "all" / "vault.yml").symlink_to(LOCAL_INVENTORY / "group_vars" / "all" / "vault.yml")
    for name in ("primary.yml", "dr.yml"):
        shutil.copy(LOCAL_INVENTORY / "group_vars" / name, directory / "group_vars" / name)
    cluster_vars = yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "clusters.yml").read_text())
    local_dir = LOCAL_INVENTORY.parents[1] / ".local"
    cluster_vars.update({"cluster_provider": "existing",
                         "k8s_kubeconfig": str(local_dir / "clusters" / "{{ inventory_hostname }}" / "kubeconfig")})
    (directory / "group_vars" / "clusters.yml").write_text(yaml.safe_dump(cluster_vars))
    inventory["all"]["children"]["clusters"] = {"children": {"primary": {"hosts": {"local-primary": {}}},
                                                             "dr": {"hosts": {"local-dr": {}}}}}
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": inventory["all"]["children"]}}))
    return directory


def insert_trade(conn: psycopg.Connection, order_id: str) -> None:
    conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                 "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, %s)", (order_id,))


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    """sapphire_testlib.wait_for with the DR drill's longer timeout and slower polling."""
    poll(predicate, timeout, what, interval=0.5)


def has_trade(servers: DataServers, host: str, order_id: str) -> bool:
    with servers.admin(host) as conn:
        return conn.execute("SELECT count(*) FROM trades WHERE order_id = %s", (order_id,)).fetchone()[0] == 1


def in_recovery(servers: DataServers, host: str) -> bool:
    with servers.admin(host, "postgres") as conn:
        return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


@pytest.fixture(scope="module")
def servers() -> Iterator[DataServers]:
    env = DataServers.start("sapphire-dr-")
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module")
def marks() -> dict[str, str]:
    """Values written before the failover and during the DR period, checked by later tests."""
    return {"before": f"dr-before-{uuid.uuid4().hex[:12]}", "during": f"dr-during-{uuid.uuid4().hex[:12]}"}


CONFIRM = {"confirm": "test"}  # sapphire_environment of the DataServers inventory


@pytest.mark.parametrize("playbook", ["dr-failover.yml", "dr-failback.yml"])
def test_refused_without_confirm_before_anything_is_written(servers: DataServers, playbook: str) -> None:
    for extra in ({}, {"confirm": "prod"}):  # unset; another environment's name
        result = servers.run(playbook, extra_vars=extra)
        assert result.rc != 0, f"{playbook} ran with {extra or 'no confirm'}"
        messages = " ".join("\n".join(result.failure_messages()).split())
        assert "-e confirm=test" in messages and "Nothing was written" in messages, messages
        assert ("confirm is unset" if not extra else "confirm is 'prod'") in messages, messages
        assert "dr-failover fences region primary" in messages or playbook == "dr-failback.yml", messages
        assert result.changed == 0, result.changed_tasks()
        assert servers.state() == {}
        assert servers.redis("redis-primary").get("sapphire:halt") is None
        assert in_recovery(servers, "pg-dr")
        assert servers.redis("redis-dr").info("replication")["role"] == "slave"


def test_failover_refused_when_the_standby_lags_more_than_the_rpo(servers: DataServers) -> None:
    with servers.admin("pg-dr", "postgres") as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        with servers.app("pg-primary") as conn:
            insert_trade(conn, f"lagging-{uuid.uuid4().hex[:12]}")
        time.sleep(1.5)
        result = servers.run("dr-failover.yml", extra_vars={"dr_rpo_seconds": 0, **CONFIRM})
        assert result.rc != 0, "failover went ahead although the standby lags and dr_rpo_seconds is 0"
        messages = "\n".join(result.failure_messages())
        assert "refused before anything was changed" in messages, messages
        # With replay paused the standby's lag is either measured above dr_rpo_seconds 0, or (when it has
        # not replayed a transaction since it started) cannot be measured at all: both must refuse.
        assert ("dr_rpo_seconds 0" in messages and "replay is paused" in messages) or \
            "PostgreSQL lag of pg-dr cannot be measured" in messages, messages
        assert "dr_force=true" in messages or "dr_force" in messages, messages
        # Nothing was touched: no fence, no promotion, no state.
        assert servers.state() == {}
        assert servers.redis("redis-primary").get("sapphire:halt") is None
        assert in_recovery(servers, "pg-dr")
        assert servers.redis("redis-dr").info("replication")["role"] == "slave"
    finally:
        with servers.admin("pg-dr", "postgres") as conn:
            conn.execute("SELECT pg_wal_replay_resume()")


def test_failover_promotes_the_dr_region_with_the_data_written_before(servers: DataServers,
                                                                      marks: dict[str, str]) -> None:
    with servers.app("pg-primary") as conn:
        insert_trade(conn, marks["before"])
    servers.redis("redis-primary").hset(f"sapphire:agent:{marks['before']}:heartbeat", mapping={"ts": time.time()})
    wait_for(lambda: has_trade(servers, "pg-dr", marks["before"]), what="the row on the standby")

    # -vvv, plain output: also proves no secret reaches the operator's terminal.
    result = servers.run("dr-failover.yml", extra_vars=CONFIRM, verbosity=3, json_output=False)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-6000:]
    for name, secret in servers.secrets.items():
        assert secret not in output, f"{name} printed by dr-failover.yml at -vvv"

    # PostgreSQL: the standby is a primary, has the row, accepts writes; the old primary is fenced.
    assert not in_recovery(servers, "pg-dr")
    assert has_trade(servers, "pg-dr", marks["before"])
    with servers.app("pg-dr") as conn:
        insert_trade(conn, marks["during"])
    assert not (servers.pg_dir("pg-primary") / "data" / "postmaster.pid").exists(), "old primary still runs"
    assert (servers.pg_dir("pg-primary") / "data" / "standby.signal").exists()
    # Redis: the replica is a primary with the data, its config says so, the fence's halt flag stays
    # in the old region only.
    new_redis = servers.redis("redis-dr")
    assert new_redis.info("replication")["role"] == "master"
    assert new_redis.hget(f"sapphire:agent:{marks['before']}:heartbeat", "ts") is not None
    assert new_redis.get("sapphire:halt") is None
    new_redis.set("sapphire:dr-test:during", marks["during"])
    conf = (servers.local_dir / "redis" / "redis-dr" / "redis.conf").read_text()
    assert not re.search(r"^replicaof ", conf, re.MULTILINE), "the promotion would not survive a restart"
    halt = json.loads(servers.redis("redis-primary").get("sapphire:halt"))
    assert halt["actor"] == "dr-failover"

    state = servers.state()
    assert state["live_region"] == "dr" and state["epoch"] == 1
    assert state["host_overrides"]["pg-dr"]["postgres_replication_role"] == "primary"
    assert state["host_overrides"]["redis-primary"] == {"redis_replication_role": "replica",
                                                        "redis_replica_of": "redis-dr"}
    last = state["history"][-1]
    assert last["operation"] == "failover" and last["to"] == "dr" and not last["forced"]
    print(f"\nmeasured RTO of the test failover: {last['rto_seconds']} s (target {last['rto_target_seconds']} s)")
    assert isinstance(last["rto_seconds"], float)


def test_failover_second_run_changes_nothing(servers: DataServers) -> None:
    result = servers.run("dr-failover.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()
    assert servers.state()["live_region"] == "dr" and servers.state()["epoch"] == 1


def test_failback_returns_the_roles_and_keeps_every_data_directory(servers: DataServers,
                                                                   marks: dict[str, str]) -> None:
    result = servers.run("dr-failback.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()

    # Home region live again, with what was written during the DR period.
    assert not in_recovery(servers, "pg-primary")
    assert has_trade(servers, "pg-primary", marks["during"])
    assert has_trade(servers, "pg-primary", marks["before"])
    assert servers.redis("redis-primary").info("replication")["role"] == "master"
    assert servers.redis("redis-primary").get("sapphire:dr-test:during") == marks["during"]
    assert servers.redis("redis-primary").get("sapphire:halt") is None
    # DR region follows it again.
    wait_for(lambda: in_recovery(servers, "pg-dr"), what="pg-dr in recovery")
    with servers.admin("pg-dr", "postgres") as conn:
        row = conn.execute("SELECT status, sender_port FROM pg_stat_wal_receiver").fetchone()
    assert row == ("streaming", servers.ports["pg-primary"])
    replica = servers.redis("redis-dr").info("replication")
    assert replica["role"] == "slave" and replica["master_port"] == servers.ports["redis-primary"]
    # The state file describes the home layout; nothing was deleted, data directories moved aside.
    state = servers.state()
    assert state["live_region"] == "primary" and state["host_overrides"] == {} and state["epoch"] == 2
    assert [entry["operation"] for entry in state["history"]] == ["failover", "failback"]
    for host in ("pg-primary", "pg-dr"):
        kept = list(servers.pg_dir(host).glob("data.demoted-*"))
        assert kept and (kept[0] / "PG_VERSION").exists(), f"{host}: old data directory not kept"
    for host in ("redis-primary", "redis-dr"):
        assert list((servers.local_dir / "redis" / host).glob("data.demoted-*")), f"{host}: old data not kept"


def test_failback_second_run_changes_nothing(servers: DataServers) -> None:
    result = servers.run("dr-failback.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()
