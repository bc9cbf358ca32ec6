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

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import psycopg
import pytest
import redis
import yaml
from sapphire_testlib import PlaybookResult, local_vault, postgres_admin, postgres_app, run_playbook, write_vault
from sapphire_testlib import wait_for as poll

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RESERVED = {15432, 15433, 16379, 16380}
TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]

if not (PG_BIN / "postgres").exists() or not Path("/usr/bin/redis-server").exists():
    pytest.skip("postgresql-15 and redis-server are needed (make setup / tools/setup-packages)",
                allow_module_level=True)


def free_port_block(count: int, low: int = 24000, high: int = 29000) -> int:
    """The first of `count` consecutive free loopback ports in [low, high) (below the ephemeral range)."""
    for base in range(low + uuid.uuid4().int % 400 * 10, high, 10):  # spread: parallel tests pick apart
        if any(port in RESERVED for port in range(base, base + count)):
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports in [{low}, {high})")


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
    def start(cls, prefix: str, clusters: dict[str, Any] | None = None,
              variables: dict[str, Any] | None = None, backup_store: bool = False) -> DataServers:
        """clusters: {"namespace": ..., "state_namespace": ...} adds the local default's two clusters
        (as existing clusters) with the local inventory's platform values: the two regions whole.
        variables: more inventory values for every host (e.g. postgres_synchronous_commit_mode: sync).
        backup_store: an S3 server of this test's own (role backup_store, host mode) with a bucket per region, and
        PostgreSQL archiving its WAL into it with pgBackRest (what backup.yml and restore.yml need)."""
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
                   "redis_password": f"redis-{uuid.uuid4().hex}",
                   "postgres_agent_password": f"agent-{uuid.uuid4().hex}",
                   "postgres_coordinator_password": f"coordinator-{uuid.uuid4().hex}",
                   "postgres_monitor_password": f"monitor-{uuid.uuid4().hex}",
                   "redis_agent_password": f"redis-agent-{uuid.uuid4().hex}",
                   "redis_replication_password": f"redis-replication-{uuid.uuid4().hex}",
                   "redis_monitor_password": f"redis-monitor-{uuid.uuid4().hex}"}
        store: dict[str, Any] = {}
        if backup_store:
            port = free_port_block(10)
            ports["backup-store"] = port
            secrets.update({"backup_store_secret_key": f"s3-{uuid.uuid4().hex}",
                            "backup_store_sse_kek": uuid.uuid4().hex + uuid.uuid4().hex,
                            "postgres_pgbackrest_cipher_pass": f"cipher-{uuid.uuid4().hex}"})
            store = {"backup_store_mode": "host", "backup_store_endpoint": f"https://127.0.0.1:{port}",
                     "backup_store_region": "us-east-1", "backup_store_access_key": f"test{uuid.uuid4().hex[:12]}",
                     "backup_store_buckets": {"primary": "sapphire-test-primary", "dr": "sapphire-test-dr"},
                     "backup_store_ca_file": str(local_dir / "backup-store" / "tls" / "ca.crt"),
                     "backup_store_object_lock_days": 1, "backup_store_object_lock_mode": "GOVERNANCE",
                     "postgres_pgbackrest": True}  # variables may say False: the store without the WAL archive
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
            # No cluster here: the platform state lives in the controller's file (said explicitly). The secrets are in
            # the test's vault file, as an environment's are: the inventory (what AWX would sync) holds none.
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                     "postgres_mode": "host", "redis_mode": "host", "sapphire_local_dir": str(local_dir),
                     "sapphire_environment": "test", "sapphire_state_store": "file",
                     **vault_references(root, secrets), **store, **(variables or {})},
        }}
        if backup_store:
            inventory["all"]["children"]["backup_store_hosts"] = {
                "hosts": {"backup-store": {"backup_store_port": ports["backup-store"]}}}
        if clusters:
            path = with_clusters(root, inventory, clusters)
        else:
            path = root / "hosts.yml"
            path.write_text(yaml.safe_dump(inventory))
            path.chmod(0o600)
        servers = cls(root=root, inventory=path, local_dir=local_dir, ports=ports, secrets=secrets)
        converges = ["molecule/postgres/converge.yml", "molecule/redis/converge.yml"]
        if backup_store:
            converges.insert(0, "tests/integration/playbooks/backup_store.yml")
        for converge in converges:
            result = servers.run(converge, timeout=900)
            if result.rc != 0:
                servers.stop()
                raise AssertionError(f"{converge} failed:\n{result.explain()}")
        return servers

    def secret_vars(self) -> dict[str, str]:
        """For an inventory of another shape over these servers: the vault file and what its values are called."""
        return vault_references(self.root, self.secrets)

    def run(self, playbook: str, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> PlaybookResult:
        return run_playbook(playbook, self.inventory, extra_vars=extra_vars, **kwargs)

    def inventory_vars(self) -> dict[str, Any]:
        """The variables every host of the inventory has (all.vars of hosts.yml, or group_vars/all/main.yml of an
        inventory with the clusters)."""
        if self.inventory.is_dir():
            return yaml.safe_load((self.inventory / "group_vars" / "all" / "main.yml").read_text())
        return yaml.safe_load(self.inventory.read_text())["all"]["vars"]

    def store(self) -> dict[str, Any]:
        """The inventory of this test's object store (backup_store=True): its variables and its host group, for an
        inventory of another shape (test_dr_self_managed's endpoints) to include."""
        variables = self.inventory_vars()
        return {"vars": {key: value for key, value in variables.items() if key.startswith("backup_store_")},
                "group": {"hosts": {"backup-store": {"backup_store_port": self.ports["backup-store"]}}}}

    def s3(self) -> Any:
        """An S3 client of this test's object store, with the inventory's key and CA."""
        variables = self.inventory_vars()
        return boto3.client("s3", endpoint_url=variables["backup_store_endpoint"], region_name="us-east-1",
                            aws_access_key_id=variables["backup_store_access_key"],
                            aws_secret_access_key=self.secrets["backup_store_secret_key"],
                            verify=variables["backup_store_ca_file"],
                            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def s3_keys(self, bucket: str, prefix: str) -> list[str]:
        listed = self.s3().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def manifests(self, bucket: str = "sapphire-test-primary") -> list[dict[str, Any]]:
        """The manifests of the complete backups in a bucket, oldest first."""
        return [json.loads(self.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
                for key in self.s3_keys(bucket, "backups/") if key.endswith("/manifest.json")]

    def pg_dir(self, host: str) -> Path:
        return self.local_dir / "postgres" / host

    def admin(self, host: str, dbname: str = "sapphire") -> psycopg.Connection:
        return postgres_admin(self.pg_dir(host), self.ports[host], dbname)

    def app(self, host: str) -> psycopg.Connection:
        return postgres_app(self.ports[host], self.secrets["postgres_password"])

    @property
    def ca_file(self) -> str:
        """The platform CA the servers' certificates are signed by (role pki, under the inventory's local dir)."""
        return str(self.local_dir / "pki" / "ca.crt")

    def redis(self, host: str, **kwargs: Any) -> redis.Redis:
        """The administrator over TLS (the instances speak TLS only), the server verified against the platform CA."""
        options = {"decode_responses": True, "socket_timeout": 10, **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.ports[host], password=self.secrets["redis_password"],
                           ssl=True, ssl_ca_certs=self.ca_file, **options)

    def state(self) -> dict[str, Any]:
        path = self.local_dir / "dr" / "state.yml"
        return yaml.safe_load(path.read_text()) if path.exists() else {}

    def stop(self) -> None:
        for host in ("pg-dr", "pg-primary"):
            data = self.pg_dir(host) / "data"
            if (data / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "stop",
                                "-m", "immediate", "-w", "-t", "60"], capture_output=True, check=False, timeout=90)
        pidfiles = [self.local_dir / "redis" / host / "redis.pid" for host in ("redis-dr", "redis-primary")]
        for pidfile in [*pidfiles, self.local_dir / "backup-store" / "weed.pid"]:
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


LOCAL_INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "local"


def vault_references(root: Path, secrets: dict[str, str]) -> dict[str, str]:
    """The test's secrets as an environment keeps them: root/vault.yml (encrypted, vault id local; with the local
    default's other values, e.g. the exchange keys a namespace's Secrets need) named by sapphire_vault_file, and the
    inventory's variables referring to vault_<name>."""
    vault = root / "vault.yml"
    if not vault.exists():
        write_vault(vault, {**local_vault(), **{f"vault_{name}": value for name, value in secrets.items()}})
    return {"sapphire_vault_file": str(vault), **{name: f"{{{{ vault_{name} }}}}" for name in secrets}}


def with_clusters(root: Path, inventory: dict[str, Any], clusters: dict[str, Any]) -> Path:
    """An inventory directory: the data hosts above, the local default's two clusters (existing: they
    run already) and the local inventory's group_vars, with this test's secrets, directories, namespace
    and state namespace. The state lives in the clusters (sapphire_state_store: clusters)."""
    directory = root / "inventory"
    (directory / "group_vars" / "all").mkdir(parents=True)
    variables = inventory["all"]["vars"]
    variables.pop("sapphire_state_store")
    # The data hosts of a test archive no WAL into the local default's object store (its stanza is another
    # cluster's): a test that wants pgBackRest says so in its variables, with an object store of its own.
    variables.update({"sapphire_namespace": clusters["namespace"], "workload_enabled": False,
                      "sapphire_state_namespace": clusters["state_namespace"], "monitoring_mode": "kubernetes",
                      "postgres_pgbackrest": variables.get("postgres_pgbackrest", False)})
    for name in ("main.yml", "agent_tiers.yml"):
        values = yaml.safe_load((LOCAL_INVENTORY / "group_vars" / "all" / name).read_text())
        values.update({key: value for key, value in variables.items() if key in values or name == "main.yml"})
        (directory / "group_vars" / "all" / name).write_text(yaml.safe_dump(values))
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


class WriteLoad:
    """Writes to the primaries of the home region (or of the region named) as fast as they take them (autocommit
    trades, Redis SETs) until each refuses, and keeps what each acknowledged: what a failover must not lose."""

    def __init__(self, servers: DataServers, region: str = "primary") -> None:
        self.servers = servers
        self.pg_host, self.redis_host = f"pg-{region}", f"redis-{region}"
        self.acked: dict[str, list[str]] = {"postgres": [], "redis": []}
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._postgres, daemon=True),
                        threading.Thread(target=self._redis, daemon=True)]

    def __enter__(self) -> WriteLoad:
        for thread in self.threads:
            thread.start()
        wait_for(lambda: all(len(acked) > 20 for acked in self.acked.values()), what="the write load")
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _postgres(self) -> None:
        try:
            with self.servers.app(self.pg_host) as conn:
                conn.autocommit = True
                while not self.stopping.is_set():
                    order_id = f"load-{uuid.uuid4().hex[:16]}"
                    insert_trade(conn, order_id)
                    self.acked["postgres"].append(order_id)  # the commit returned: acknowledged
                    time.sleep(0.01)
        except psycopg.Error:
            return  # the fence stopped the old primary: nothing more is acknowledged

    def _redis(self) -> None:
        client = self.servers.redis(self.redis_host, socket_timeout=600, decode_responses=False)
        try:
            while not self.stopping.is_set():
                key = f"sapphire:dr-load:{uuid.uuid4().hex[:16]}"
                client.set(key, "1")
                self.acked["redis"].append(key)
                time.sleep(0.01)
        except redis.RedisError:
            return  # paused by the fence, then a replica (READONLY) or restarted: nothing more is acknowledged


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


def test_check_mode_walks_the_whole_chain_and_changes_nothing(servers: DataServers) -> None:
    result = servers.run("dr-failover.yml", extra_vars=CONFIRM, check=True)
    assert result.rc == 0, result.explain()
    output = result.stdout
    for expected in ("measure (ran for real", "would set sapphire:halt and CLIENT PAUSE WRITE on Redis redis-primary",
                     "would stop PostgreSQL pg-primary", "would pg_promote pg-dr", "epoch 1"):
        assert expected in output, expected
    assert servers.state() == {}
    assert servers.redis("redis-primary").get("sapphire:halt") is None
    assert in_recovery(servers, "pg-dr")
    assert servers.redis("redis-dr").info("replication")["role"] == "slave"
    assert (servers.pg_dir("pg-primary") / "data" / "postmaster.pid").exists(), "the old primary still runs"


def pg_ctl(servers: DataServers, host: str, action: str) -> None:
    """Stop or start a server of the DataServers by hand, as an outage would (the role's configuration file)."""
    config = f"-c config_file={servers.pg_dir(host) / 'conf' / 'postgresql.conf'}"
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(servers.pg_dir(host) / "data"),
                    "-l", str(servers.pg_dir(host) / "pg_ctl.log"), "-o", config, "-m", "fast", "-w", "-t", "60",
                    action], check=True, capture_output=True, timeout=90)


def test_failover_refused_when_the_old_primary_cannot_be_reached_and_the_region_is_not_declared_lost(
        servers: DataServers) -> None:
    """The old primary neither answers nor can be fenced on its disk: its server is down and its data directory is
    gone (a server that is merely down on a host Ansible reaches is fenced on its disk: test_dr_unplanned.py)."""
    pg_ctl(servers, "pg-primary", "stop")
    data = servers.pg_dir("pg-primary") / "data"
    lost = data.with_name("data.disk-lost")
    data.rename(lost)
    try:
        result = servers.run("dr-failover.yml", extra_vars=CONFIRM)
        assert result.rc != 0, "promoted although the old primary could be neither fenced nor measured"
        messages = " ".join("\n".join(result.failure_messages()).split())
        assert "PostgreSQL pg-primary" in messages and "dr_old_region_lost=true" in messages, messages
        assert result.changed == 0, result.changed_tasks()
        assert servers.state() == {}
        assert in_recovery(servers, "pg-dr")
        assert servers.redis("redis-primary").get("sapphire:halt") is None
    finally:
        lost.rename(data)
        pg_ctl(servers, "pg-primary", "start")
    wait_for(lambda: stream_status(servers, "pg-dr") == "streaming", what="pg-dr streaming again")


def stream_status(servers: DataServers, host: str) -> str:
    with servers.admin(host, "postgres") as conn:
        row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
    return row[0] if row else ""


def test_failover_promotes_the_dr_region_with_the_data_written_before(servers: DataServers,
                                                                      marks: dict[str, str]) -> None:
    with servers.app("pg-primary") as conn:
        insert_trade(conn, marks["before"])
    servers.redis("redis-primary").hset(f"sapphire:agent:{marks['before']}:heartbeat", mapping={"ts": time.time()})
    wait_for(lambda: has_trade(servers, "pg-dr", marks["before"]), what="the row on the standby")

    # Under a write load against the home region's primaries, as an AWX job at -vvv: no event AWX stores of it (nor
    # the synced inventory) holds a secret, its base64 or URL-encoded form.
    with WriteLoad(servers) as load:
        result = servers.run("dr-failover.yml", extra_vars={**CONFIRM, "dr_reason": "planned drill"}, verbosity=3,
                             awx_job_id=2101)
    assert result.rc == 0, result.explain()
    assert result.job.leaked({**servers.secrets, **local_vault()}) == []

    # PostgreSQL: the standby is a primary, has the row, accepts writes; the old primary is fenced.
    assert not in_recovery(servers, "pg-dr")
    assert has_trade(servers, "pg-dr", marks["before"])
    # Planned: not one acknowledged write lost, in either datastore.
    with servers.admin("pg-dr") as conn:
        found = {row[0] for row in conn.execute("SELECT order_id FROM trades WHERE order_id = ANY(%s)",
                                                (load.acked["postgres"],))}
    missing = [order_id for order_id in load.acked["postgres"] if order_id not in found]
    print(f"\nwrite load: {len(load.acked['postgres'])} PostgreSQL commits and {len(load.acked['redis'])} Redis SETs "
          f"acknowledged by the old primaries")
    assert missing == [], f"{len(missing)} acknowledged commits lost: {missing[:5]}"
    new_redis = servers.redis("redis-dr")
    lost_keys = [key for key in load.acked["redis"] if not new_redis.exists(key)]
    assert lost_keys == [], f"{len(lost_keys)} acknowledged Redis writes lost: {lost_keys[:5]}"
    # Exactly one writable primary per datastore: the old Redis follows the new one, the old PostgreSQL is stopped.
    old_redis = servers.redis("redis-primary").info("replication")
    assert old_redis["role"] == "slave" and old_redis["master_port"] == servers.ports["redis-dr"], old_redis
    with pytest.raises(redis.ReadOnlyError):
        servers.redis("redis-primary").set("sapphire:dr-test:split-brain", "1")
    # The new epoch is in both datastores (the workload's fence contract).
    assert new_redis.get("sapphire:epoch") == "1"
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT epoch, region, operation FROM sapphire_epoch").fetchone() == (1, "dr", "failover")
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
    halt = json.loads(servers.redis("redis-primary").get("sapphire:halt") or "{}")  # by replication: none
    assert halt.get("actor") != "dr-failback"

    state = servers.state()
    assert state["live_region"] == "dr" and state["epoch"] == 1
    assert state["host_overrides"]["pg-dr"]["postgres_replication_role"] == "primary"
    assert state["host_overrides"]["redis-primary"] == {"redis_replication_role": "replica",
                                                        "redis_replica_of": "redis-dr"}
    last = state["history"][-1]
    assert last["operation"] == "failover" and last["to"] == "dr" and not last["forced"] and last["epoch"] == 1
    assert last["fence_verified"] and last["reason"] == "planned drill"
    # The drill report: every step timed, the loss measured (planned: 0 bytes), the RTO from fence to validated.
    report = json.loads(Path(last["report"]).read_text())
    assert [step["step"] for step in report["steps"]] == ["fence", "promote", "switch", "positions", "validate"]
    positions = next(step for step in report["steps"] if step["step"] == "positions")
    # No agent kept positions in this drill: nothing was reconciled, and the report does not say ok.
    assert positions["status"] == "not measured" and "no agent keeps positions" in positions["detail"], positions
    assert report["rpo"] == "met: 0 bytes lost (measured)", report["loss"]
    assert report["loss"]["postgres"]["measured"] and report["loss"]["redis"]["measured"]
    assert report["rto"].startswith("met") and report["rto_seconds"] > 0
    assert Path(last["report"]).with_suffix(".md").read_text().startswith("# DR failover")
    # The report is the job's artifact too (set_stats): a workflow branches on it.
    assert result.job.stats()["sapphire_dr_report"] == report
    print(f"measured RTO of the test failover: {report['rto_seconds']} s; loss {report['loss']}")


def test_validate_is_green_after_the_failover_and_reports_the_fenced_server_as_fenced(servers: DataServers) -> None:
    result = servers.run("validate.yml", extra_vars={"validate_components": ["redis", "postgres"]}, awx_job_id=2102)
    assert result.rc == 0, result.explain()
    report = json.loads((servers.local_dir / "reports" / "validate.json").read_text())
    # As an AWX job: the health is the job's artifact (set_stats, without the per-check detail), no secret stored.
    published = result.job.stats()["sapphire_validate_report"]
    assert published == {key: value for key, value in report.items() if key != "reports"}
    assert published["healthy"] is True and published["summary"]["fail"] == 0
    assert result.job.leaked({**servers.secrets, **local_vault()}) == []
    checks = {(item["host"], check["name"]): check["status"] for item in report["reports"]
              for check in item.get("checks", [])}
    assert checks[("pg-primary", "postgres_fenced")] == "ok", checks
    assert checks[("redis-primary", "redis_role")] == "ok", checks  # a replica of the new primary, as the state says


def test_a_writer_given_a_newer_epoch_refuses_the_stores(servers: DataServers) -> None:
    """The workload's epoch fence against the real promoted stores (epoch 1): given epoch 2 it writes nothing."""
    agents = servers.root / "agents.json"
    agents.write_text(json.dumps([{"name": "momentum", "tier": "standard", "replicas": 1}]))
    with servers.admin("pg-dr") as conn:
        before = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "workload"),
           "SAPPHIRE_REDIS_PASSWORD": servers.secrets["redis_password"], "SAPPHIRE_REDIS_CA_FILE": servers.ca_file,
           "SAPPHIRE_POSTGRES_DSN": f"host=127.0.0.1 port={servers.ports['pg-dr']} dbname=sapphire user=sapphire "
                                    f"password={servers.secrets['postgres_password']}"}
    command = [sys.executable, "-m", "sapphire_workload", f"--agents={agents}", "--once",
               f"--redis-url=rediss://127.0.0.1:{servers.ports['redis-dr']}/0"]
    refused = subprocess.run([*command, "--epoch=2"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "older than this writer's epoch 2" in refused.stdout + refused.stderr
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == before
    written = subprocess.run([*command, "--epoch=1"], env=env, capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stdout + written.stderr
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] > before


def test_failover_second_run_changes_nothing(servers: DataServers) -> None:
    result = servers.run("dr-failover.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()
    assert servers.state()["live_region"] == "dr" and servers.state()["epoch"] == 1


def test_failback_returns_the_roles_and_keeps_every_data_directory(servers: DataServers,
                                                                   marks: dict[str, str]) -> None:
    # The fenced old primary writes after the fork (its region was not really gone: standby.signal removed by
    # hand, started, a trade taken): the failback must keep that row aside, named and counted.
    post_fork = f"post-fork-{uuid.uuid4().hex[:12]}"
    (servers.pg_dir("pg-primary") / "data" / "standby.signal").unlink()
    pg_ctl(servers, "pg-primary", "start")
    try:
        with servers.app("pg-primary") as conn:
            insert_trade(conn, post_fork)
    finally:
        pg_ctl(servers, "pg-primary", "stop")

    result = servers.run("dr-failback.yml", extra_vars=CONFIRM, awx_job_id=2103)
    assert result.rc == 0, result.explain()
    assert result.job.leaked({**servers.secrets, **local_vault()}) == []

    report = json.loads(Path(servers.state()["history"][-1]["report"]).read_text())
    assert result.job.stats()["sapphire_dr_report"] == report
    [export] = report["post_fork_export"]
    assert export["host"] == "pg-primary" and export["rows"] == 1, export
    trades_file = next(path for path in export["files"] if path.endswith("-trades.csv"))
    assert post_fork in Path(trades_file).read_text() and export["files"][trades_file] == 1
    assert not has_trade(servers, "pg-primary", post_fork), "the post-fork row is kept aside, not in the live data"

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
    result = servers.run("dr-failback.yml", extra_vars=CONFIRM, awx_job_id=2104)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()
    assert result.job.stats()["sapphire_dr_report"] == {"operation": "failback", "noop": True}
