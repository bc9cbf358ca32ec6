"""dr-failover.yml and dr-failback.yml with the data services declared external (postgres_external_provider and
redis_external_provider self_managed): servers another team runs, which the toolkit reaches over the network with an
administrative login but never logs in to.

Throw-away servers made by the roles in host mode (test_dr.DataServers: a PostgreSQL primary and its streaming
standby, a Redis primary and its replica) are then declared, in a second inventory, as the external endpoints of
two regions (groups postgres_endpoints and redis_endpoints), beside the local default's two clusters (a throw-away
namespace and state namespace): no data host of that inventory is one the roles log in to. The test plays the other
team where the toolkit cannot act: it gives the admin login a pg_hba line, and, before the failback, re-seeds the
fenced old primary as a standby of the live one.

In order: deploy points each cluster's Services at the live primaries; --check lists the provider steps and changes
nothing; a failover under a write load loses no acknowledged write, leaves exactly one writable primary per datastore
(the old PostgreSQL fenced read-only over the network, the old Redis a replica of the new one), points the live
cluster's Services at the promoted servers, reports the RPO as measured, and validate agrees; a second run changes
nothing; a failback is refused until the owner has re-seeded the old primary, then switches back under a write load;
backup.yml backs up the live servers over the network and says what a provider keeps itself.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from sapphire_testlib import LocalClusters, PlaybookResult, run_playbook
from test_dr import PG_BIN, DataServers, WriteLoad, in_recovery, pg_ctl, stream_status, wait_for, with_clusters

pytestmark = [pytest.mark.cluster, pytest.mark.servers, pytest.mark.slow]

CONFIRM = {"confirm": "test"}
ADMIN_USER = "sapphire_admin"
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"
AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 1}]

class ExternalRegions:
    """The DataServers seen as two regions' external endpoints in an inventory of their own: with the two clusters
    (a throw-away namespace and state namespace; the state in the clusters), or without (the state in a file)."""

    def __init__(self, servers: DataServers, clusters: LocalClusters | None = None, namespace: str = "",
                 state_namespace: str = "", providers: tuple[str, str] = ("self_managed", "self_managed"),
                 endpoint_vars: dict[str, dict[str, Any]] | None = None, variables: dict[str, Any] | None = None
                 ) -> None:
        """endpoint_vars: more values per endpoint (pg-east, pg-west, redis-east, redis-west); variables: for all."""
        self.servers, self.clusters, self.namespace = servers, clusters, namespace
        self.state_namespace = state_namespace
        self.local_dir = servers.root / "external"
        self.local_dir.mkdir(mode=0o755)
        ports = servers.ports
        endpoints = {
            "postgres_endpoints": {"hosts": {
                "pg-east": {"sapphire_region": "primary", "postgres_external_port": ports["pg-primary"],
                            "postgres_replication_role": "primary"},
                "pg-west": {"sapphire_region": "dr", "postgres_external_port": ports["pg-dr"],
                            "postgres_replication_role": "standby", "postgres_primary_host": "pg-east"}}},
            "redis_endpoints": {"hosts": {
                "redis-east": {"sapphire_region": "primary", "redis_external_port": ports["redis-primary"],
                               "redis_replication_role": "primary"},
                "redis-west": {"sapphire_region": "dr", "redis_external_port": ports["redis-dr"],
                               "redis_replication_role": "replica", "redis_replica_of": "redis-east"}}},
        }
        for group in endpoints.values():
            for name, values in group["hosts"].items():
                values.update((endpoint_vars or {}).get(name, {}))
        store = servers.store()  # the object store of the backups, the DataServers' own
        inventory = {"all": {"children": {**endpoints, "backup_store_hosts": store["group"]}, "vars": {
            "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "postgres_mode": "external", "redis_mode": "external",
            "postgres_external_provider": providers[0], "redis_external_provider": providers[1],
            "postgres_external_host": "127.0.0.1", "redis_external_host": "127.0.0.1",
            # The role's servers speak TLS only (postgres_tls, redis_tls): the external defaults (verify-full, TLS
            # on) against the CA that signed them.
            "postgres_external_sslmode": "verify-full",
            "postgres_external_sslrootcert": servers.ca_file,
            "redis_external_tls": True, "redis_external_tls_ca_file": servers.ca_file,
            "postgres_admin_user": ADMIN_USER,
            "postgres_admin_password": ADMIN_PASSWORD, "sapphire_local_dir": str(self.local_dir),
            "sapphire_environment": "test", "sapphire_state_store": "clusters" if clusters else "file",
            "trading_agents": AGENTS, **servers.secret_vars(), **store["vars"], **(variables or {})}}}
        if clusters:
            self.inventory = with_clusters(servers.root, inventory,
                                           {"namespace": namespace, "state_namespace": state_namespace})
        else:
            self.inventory = servers.root / "external.yml"
            self.inventory.write_text(yaml.safe_dump(inventory))
            self.inventory.chmod(0o600)

    @classmethod
    def start(cls, prefix: str, **kwargs: Any) -> ExternalRegions:
        """Servers made by the roles, given the owner's admin login, declared as the endpoints of two regions."""
        servers = DataServers.start(prefix, backup_store=True, variables={"postgres_pgbackrest": False})
        try:
            with servers.admin("pg-primary", "postgres") as conn:
                conn.execute(f"CREATE ROLE {ADMIN_USER} SUPERUSER LOGIN PASSWORD '{ADMIN_PASSWORD}'")
            for host in ("pg-primary", "pg-dr"):
                allow_admin_login(servers, host)
            return cls(servers, **kwargs)
        except BaseException:
            servers.stop()
            raise

    def run(self, playbook: str, extra_vars: dict[str, Any] | None = None, **kwargs: Any) -> PlaybookResult:
        return run_playbook(playbook, self.inventory, extra_vars=extra_vars, **kwargs)

    def state(self) -> dict[str, Any]:
        """The platform state as the live cluster keeps it (the controller's cache is a copy), or its file."""
        if self.clusters is None:
            path = self.local_dir / "dr" / "state.yml"
            return yaml.safe_load(path.read_text()) if path.exists() else {}
        got = self.clusters.kubectl("local-dr", "-n", self.state_namespace, "get", "configmap", "sapphire-state",
                                    "-o", "json", check=False)
        return json.loads(json.loads(got.stdout)["data"]["state.json"]) if got.returncode == 0 else {}

    def service_target(self, cluster: str, service: str) -> str:
        """Where a cluster's Service leads (the annotation its pointer writes with the endpoint)."""
        got = json.loads(self.clusters.kubectl(cluster, "-n", self.namespace, "get", "service", service,
                                               "-o", "json").stdout)
        return got["metadata"]["annotations"][f"sapphire.io/{service}-endpoint"]

    def pod_client(self, cluster: str, service: str) -> dict[str, str]:
        """How a cluster's pods dial `service` (the ConfigMap <service>-client its role publishes), without the CA."""
        got = json.loads(self.clusters.kubectl(cluster, "-n", self.namespace, "get", "configmap", f"{service}-client",
                                               "-o", "json").stdout)["data"]
        prefix = service.upper()
        return {"dial": f"{got[prefix + '_HOST']}:{got[prefix + '_PORT']}",
                **{key: value for key, value in got.items() if key in ("PGSSLMODE", "REDIS_TLS")}}

    def report(self) -> dict[str, Any]:
        return json.loads(Path(self.state()["history"][-1]["report"]).read_text())


def allow_admin_login(servers: DataServers, host: str) -> None:
    """The owner's part: a pg_hba line for the administrative login over TCP (the role renders none)."""
    hba = servers.pg_dir(host) / "conf" / "pg_hba.conf"
    hba.write_text(hba.read_text() + f"host all {ADMIN_USER} 127.0.0.1/32 scram-sha-256\n")
    with servers.admin(host, "postgres") as conn:
        conn.execute("SELECT pg_reload_conf()")


def app_can_write(servers: DataServers, host: str) -> bool:
    try:
        with servers.app(host) as conn:
            conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                         "VALUES (now(), 'ETHUSDT', 'probe', 'buy', 1, 1, %s)", (f"probe-{uuid.uuid4().hex[:8]}",))
        return True
    except psycopg.Error:
        return False


def acked_everywhere(servers: DataServers, load: WriteLoad, pg_host: str, redis_host: str) -> None:
    """Every write the old primaries acknowledged is on the new ones."""
    with servers.admin(pg_host) as conn:
        found = {row[0] for row in conn.execute("SELECT order_id FROM trades WHERE order_id = ANY(%s)",
                                                (load.acked["postgres"],))}
    missing = [order_id for order_id in load.acked["postgres"] if order_id not in found]
    client = servers.redis(redis_host)
    lost_keys = [key for key in load.acked["redis"] if not client.exists(key)]
    print(f"\nwrite load: {len(load.acked['postgres'])} PostgreSQL commits, {len(load.acked['redis'])} Redis SETs "
          f"acknowledged; lost {len(missing)} and {len(lost_keys)}")
    assert missing == [], f"{len(missing)} acknowledged commits lost: {missing[:5]}"
    assert lost_keys == [], f"{len(lost_keys)} acknowledged Redis writes lost: {lost_keys[:5]}"


def reseed_as_standby(servers: DataServers, host: str, primary: str) -> None:
    """The owner's part before a failback: the fenced old primary's data moved aside and a fresh standby of the live
    primary seeded (pg_basebackup -R), started with its configuration file."""
    pg_ctl(servers, host, "stop")
    data = servers.pg_dir(host) / "data"
    data.rename(data.with_name("data.fenced"))
    password = servers.secrets["postgres_replication_password"]
    subprocess.run(["runuser", "-u", "postgres", "--", "env", f"PGPASSWORD={password}",
                    str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(servers.ports[primary]),
                    "-U", "replicator", "-D", str(data), "-R", "-X", "stream", "-c", "fast"],
                   check=True, capture_output=True, timeout=300)
    pg_ctl(servers, host, "start")
    wait_for(lambda: stream_status(servers, host) == "streaming", what=f"{host} streaming from {primary}")


@pytest.fixture(scope="module")
def regions(local_clusters: LocalClusters) -> Iterator[ExternalRegions]:
    suffix = uuid.uuid4().hex[:6]
    namespace, state_namespace = f"it-external-{suffix}", f"it-external-state-{suffix}"
    env = ExternalRegions.start("sapphire-dr-external-", clusters=local_clusters, namespace=namespace,
                                state_namespace=state_namespace)
    try:
        deployed = env.run("deploy.yml")
        assert deployed.rc == 0, deployed.explain()
        yield env
    finally:
        env.servers.stop()
        local_clusters.drop_namespaces(namespace, state_namespace)


def test_deploy_points_every_cluster_at_the_live_primaries(regions: ExternalRegions) -> None:
    ports = regions.servers.ports
    for cluster in ("local-primary", "local-dr"):
        assert regions.service_target(cluster, "postgres") == f"127.0.0.1:{ports['pg-primary']}", cluster
        assert regions.service_target(cluster, "redis") == f"127.0.0.1:{ports['redis-primary']}", cluster
        # The pods verify a managed server by name: they dial its endpoint, not the Service alias.
        assert regions.pod_client(cluster, "postgres") == {"dial": f"127.0.0.1:{ports['pg-primary']}",
                                                           "PGSSLMODE": "verify-full"}, cluster
        assert regions.pod_client(cluster, "redis") == {"dial": f"127.0.0.1:{ports['redis-primary']}",
                                                        "REDIS_TLS": "true"}, cluster


def test_check_lists_the_provider_steps_and_changes_nothing(regions: ExternalRegions) -> None:
    result = regions.run("dr-failover.yml", extra_vars=CONFIRM, check=True)
    assert result.rc == 0, result.explain()
    walk = " ".join(result.stdout.split())
    for expected in ("would forbid the application login of PostgreSQL pg-east (self_managed, over the network",
                     "would pg_promote pg-west (self_managed, over the network)",
                     "REPLICAOF NO ONE redis-west (self_managed, over the network)",
                     "make Redis redis-east a replica of redis-west (its dataset copied to the controller first)"):
        assert expected in walk, expected
    servers = regions.servers
    assert regions.state()["epoch"] == 0
    assert in_recovery(servers, "pg-dr") and app_can_write(servers, "pg-primary")
    assert servers.redis("redis-dr").info("replication")["role"] == "slave"
    assert servers.redis("redis-primary").get("sapphire:halt") is None


def test_failover_under_a_write_load_loses_no_acknowledged_write(regions: ExternalRegions) -> None:
    servers = regions.servers
    with WriteLoad(servers) as load:
        result = regions.run("dr-failover.yml", extra_vars={**CONFIRM, "dr_reason": "self-managed drill"},
                             verbosity=3, json_output=False)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-6000:]
    for name, secret in {**servers.secrets, "postgres_admin_password": ADMIN_PASSWORD}.items():
        assert secret not in output, f"{name} printed by dr-failover.yml at -vvv"
    acked_everywhere(servers, load, "pg-dr", "redis-dr")

    # One writable primary per datastore: the new PostgreSQL takes the application's writes, the old one is fenced
    # over the network (still running, the application login refused, new transactions read-only).
    assert not in_recovery(servers, "pg-dr") and app_can_write(servers, "pg-dr")
    assert (servers.pg_dir("pg-primary") / "data" / "postmaster.pid").exists(), "the owner's server was stopped"
    assert not app_can_write(servers, "pg-primary")
    with psycopg.connect(host="127.0.0.1", port=servers.ports["pg-primary"], user=ADMIN_USER, password=ADMIN_PASSWORD,
                         dbname="sapphire") as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    old_redis = servers.redis("redis-primary").info("replication")
    assert old_redis["role"] == "slave" and old_redis["master_port"] == servers.ports["redis-dr"], old_redis
    with pytest.raises(redis.ReadOnlyError):
        servers.redis("redis-primary").set("sapphire:dr-test:split-brain", "1")
    assert list((regions.local_dir / "redis-copies").glob("*.rdb")), "the old Redis' dataset was not copied first"
    # The epoch is in both new primaries; the fence's halt flag is lifted on the new Redis.
    assert servers.redis("redis-dr").get("sapphire:epoch") == "1"
    assert servers.redis("redis-dr").get("sapphire:halt") is None
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT epoch, region, operation FROM sapphire_epoch").fetchone() == (1, "dr", "failover")

    state = regions.state()
    assert state["live_region"] == "dr" and state["epoch"] == 1
    assert state["host_overrides"]["pg-west"]["postgres_replication_role"] == "primary"
    assert state["host_overrides"]["redis-east"] == {"redis_replication_role": "replica",
                                                     "redis_replica_of": "redis-west"}
    report = regions.report()
    assert report["rpo"] == "met: 0 bytes lost (measured)", report["loss"]
    assert report["promoted"] == {"postgres": "pg-west", "redis": "redis-west"}
    assert report["rto"].startswith("met"), report["rto"]
    fence = next(step for step in report["steps"] if step["step"] == "fence")["detail"]
    assert "over the network" in fence["postgres_last_lsn_from"], fence
    print(f"self-managed failover: RTO {report['rto_seconds']} s, loss {report['loss']}")
    # The live cluster's Services lead to the promoted servers.
    assert regions.service_target("local-dr", "postgres") == f"127.0.0.1:{servers.ports['pg-dr']}"
    assert regions.service_target("local-dr", "redis") == f"127.0.0.1:{servers.ports['redis-dr']}"
    # ... and so do its pods, which dial the managed endpoints themselves (started by the switch after re-pointing).
    assert regions.pod_client("local-dr", "postgres")["dial"] == f"127.0.0.1:{servers.ports['pg-dr']}"
    assert regions.pod_client("local-dr", "redis")["dial"] == f"127.0.0.1:{servers.ports['redis-dr']}"


def test_validate_checks_each_endpoint_and_that_the_agents_view_agrees(regions: ExternalRegions) -> None:
    result = regions.run("validate.yml", extra_vars={"validate_components": ["redis", "postgres", "namespace"]})
    assert result.rc == 0, result.explain()
    report = json.loads((regions.local_dir / "reports" / "validate.json").read_text())
    checks = {(item["component"], item["host"], check["name"]): check["status"]
              for item in report["reports"] for check in item["checks"]}
    assert checks[("postgres", "pg-west", "postgres_role")] == "ok"
    assert checks[("postgres", "pg-east", "postgres_fenced")] == "ok"
    assert checks[("redis", "redis-east", "redis_role")] == "ok"
    # verify-full (the external default) read the certificate each endpoint presents.
    assert checks[("postgres", "pg-west", "postgres_certificate")] == "ok"
    # The live region's cluster leads to the promoted servers; the fenced region's is not held to it.
    assert checks[("endpoints", "local-dr", "postgres_service_target")] == "ok"
    assert checks[("endpoints", "local-dr", "redis_service_target")] == "ok"
    assert ("endpoints", "local-primary", "postgres_service_target") not in checks

    # A Service left on the fenced server (a failed switch, a hand edit) is found and named.
    ports = regions.servers.ports
    annotate = ("-n", regions.namespace, "annotate", "service", "postgres", "--overwrite")
    regions.clusters.kubectl("local-dr", *annotate, f"sapphire.io/postgres-endpoint=127.0.0.1:{ports['pg-primary']}")
    try:
        stale = regions.run("validate.yml", extra_vars={"validate_components": ["postgres", "namespace"]})
    finally:
        regions.clusters.kubectl("local-dr", *annotate, f"sapphire.io/postgres-endpoint=127.0.0.1:{ports['pg-dr']}")
    assert stale.rc != 0
    messages = " ".join(" ".join(stale.failure_messages()).split())
    assert (f"Service postgres leads to 127.0.0.1:{ports['pg-primary']}, not to the live primary "
            f"127.0.0.1:{ports['pg-dr']}") in messages, messages


def test_an_endpoint_whose_certificate_the_controller_cannot_verify_is_refused(regions: ExternalRegions) -> None:
    """verify-full verifies: against the controller's trust store (the default CA, which did not sign the servers'
    certificates) validate cannot log in to the live primary and says why."""
    result = regions.run("validate.yml", extra_vars={"validate_components": ["postgres"],
                                                     "postgres_external_sslrootcert": "system"})
    assert result.rc != 0
    report = json.loads((regions.local_dir / "reports" / "validate.json").read_text())
    (live,) = [item for item in report["reports"] if item["component"] == "postgres" and item["host"] == "pg-west"]
    failed = " ".join(check["msg"] for check in live["checks"] if check["status"] == "fail")
    assert "certificate verify failed" in failed, live["checks"]


def test_failover_second_run_changes_nothing(regions: ExternalRegions) -> None:
    result = regions.run("dr-failover.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()


def test_failback_waits_for_the_owner_to_reseed_the_old_primary_then_switches_back(regions: ExternalRegions) -> None:
    servers = regions.servers
    refused = regions.run("dr-failback.yml", extra_vars=CONFIRM)
    assert refused.rc != 0, "promoted a fenced former primary with a history of its own"
    messages = " ".join(" ".join(refused.failure_messages()).split())
    assert "pg-east is a former primary fenced by an earlier switch" in messages and "re-seed" in messages, messages
    assert regions.state()["live_region"] == "dr" and not in_recovery(servers, "pg-dr")
    assert servers.redis("redis-dr").info("replication")["role"] == "master"

    reseed_as_standby(servers, "pg-primary", "pg-dr")
    with WriteLoad(servers, region="dr") as load:
        result = regions.run("dr-failback.yml", extra_vars=CONFIRM)
    assert result.rc == 0, result.explain()
    acked_everywhere(servers, load, "pg-primary", "redis-primary")
    assert not in_recovery(servers, "pg-primary") and app_can_write(servers, "pg-primary")
    assert not app_can_write(servers, "pg-dr"), "the DR region's PostgreSQL still takes writes"
    assert servers.redis("redis-dr").info("replication")["role"] == "slave"
    assert servers.redis("redis-primary").get("sapphire:epoch") == "2"
    state = regions.state()
    assert state["live_region"] == "primary" and state["epoch"] == 2 and state["host_overrides"] == {}
    assert regions.report()["rpo"] == "met: 0 bytes lost (measured)"

    again = regions.run("dr-failback.yml", extra_vars=CONFIRM)
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()


def test_backup_of_the_live_self_managed_servers_over_the_network(regions: ExternalRegions) -> None:
    """backup.yml with the endpoints: a base backup of the live PostgreSQL (pg_basebackup with the replication login)
    and the RDB of the live Redis (redis-cli --rdb), written on the controller with their checksums."""
    servers = regions.servers
    result = regions.run("backup.yml")
    assert result.rc == 0, result.explain()
    (found,) = servers.manifests()
    postgres, redis_part = found["components"]["postgres"], found["components"]["redis"]
    assert postgres["host"] == "pg-east" and postgres["source"] == f"127.0.0.1:{servers.ports['pg-primary']}"
    assert postgres["role"] == "primary" and {"base.tar.gz", "pg_wal.tar.gz"} <= {f["name"] for f in postgres["files"]}
    assert postgres["rows_at_start"]["trades"] > 0
    assert redis_part["host"] == "redis-east" and redis_part["method"].startswith("RDB streamed")
    # In the object store (both regions' buckets), not on the controller.
    for bucket in ("sapphire-test-primary", "sapphire-test-dr"):
        assert servers.s3_keys(bucket, f"postgres/{found['id']}/") and servers.s3_keys(bucket, f"redis/{found['id']}/")
    dump = servers.s3().get_object(Bucket="sapphire-test-dr", Key=f"redis/{found['id']}/dump.rdb")["Body"].read()
    assert dump[:5] == b"REDIS" and redis_part["files"][0]["bytes"] == len(dump)
    assert not [path for path in (regions.local_dir / "backups").rglob("*") if path.is_file()]
    assert servers.redis("redis-primary").hget("sapphire:backup:redis", "id") == found["id"]

    # A provider that keeps its own backups (here the Redis said to be Memorystore): not an hourly failure.
    managed = regions.run("backup.yml", extra_vars={"redis_external_provider": "memorystore"})
    assert managed.rc == 0, managed.explain()
    shown = " ".join(str(item.get("msg", "")) for item in managed.task_results("Show what was backed up").values())
    assert "redis: NOT backed up by this toolkit: its provider (memorystore)" in " ".join(shown.split()), shown
    assert [sorted(item["components"]) for item in servers.manifests()] == [["kubernetes", "postgres", "redis"],
                                                                            ["kubernetes", "postgres"]]
