"""The live region kept in the clusters, one operations lock, one topology (playbooks/boilerplate.yml).

Two regions whole: the local default's two clusters (as existing clusters, a throw-away namespace and a
throw-away state namespace) and real data servers of the test's own (tests/integration/test_dr.py's
DataServers: PostgreSQL primary + standby, Redis primary + replica). What an operator relies on:
- after a failover, with the controller's cached state file deleted (AWX: a fresh container; a second
  operator's machine), emergency-stop halts the live Redis, resume clears it there, a deploy changes no
  replication role, and failback restores the home layout;
- a second writer is refused at once naming the first, while emergency-stop is never blocked;
- when the clusters disagree the higher epoch wins and the other is repaired by the next writer;
- when no cluster can be read, a writer refuses before any write and names sapphire_state_from_cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sapphire_testlib import REPO_ROOT, VENV_BIN, LocalClusters, PlaybookResult
from test_dr import CONFIRM, DataServers, in_recovery, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.servers, pytest.mark.slow]

AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 1},
          {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1}]
STOP = {"emergency_stop_reason": "state test", "emergency_stop_actor": "it-state"}


class Regions:
    def __init__(self, servers: DataServers, clusters: LocalClusters, namespace: str, state_namespace: str) -> None:
        self.servers, self.clusters = servers, clusters
        self.namespace, self.state_namespace = namespace, state_namespace

    def run(self, playbook: str, **extra: Any) -> PlaybookResult:
        return self.servers.run(playbook, extra_vars={"trading_agents": AGENTS, "resume_validate": False, **extra})

    def state(self, cluster: str) -> dict[str, Any] | None:
        got = self.clusters.kubectl(cluster, "-n", self.state_namespace, "get", "configmap", "sapphire-state",
                                    "-o", "json", check=False)
        return json.loads(json.loads(got.stdout)["data"]["state.json"]) if got.returncode == 0 else None

    def lease_holder(self, cluster: str = "local-primary") -> str:
        got = self.clusters.kubectl(cluster, "-n", self.state_namespace, "get", "lease", "sapphire-operations",
                                    "-o", "json", check=False)
        return (json.loads(got.stdout).get("spec") or {}).get("holderIdentity") or "" if got.returncode == 0 else ""

    def halt(self, host: str) -> dict[str, Any] | None:
        value = self.servers.redis(host).get("sapphire:halt")
        return json.loads(value) if value else None

    def cache_file(self) -> Any:
        return self.servers.local_dir / "dr" / "state.yml"

    def fence(self, cluster: str) -> dict[str, Any]:
        """What fences a region's cluster: its exchange egress policies and its coordinator's replicas."""
        policies = json.loads(self.clusters.kubectl(cluster, "-n", self.namespace, "get", "networkpolicy",
                                                    "-o", "json").stdout)["items"]
        coordinator = json.loads(self.clusters.kubectl(cluster, "-n", self.namespace, "get", "deployment",
                                                       "trading-coordinator", "-o", "json").stdout)
        return {"egress": sorted(item["metadata"]["name"] for item in policies
                                 if item["metadata"]["name"].endswith("-exchange-egress")),
                "coordinator": coordinator["spec"].get("replicas")}


@pytest.fixture(scope="module")
def regions(local_clusters: LocalClusters) -> Iterator[Regions]:
    suffix = uuid.uuid4().hex[:6]
    namespace, state_namespace = f"it-region-{suffix}", f"it-state-{suffix}"
    servers = DataServers.start("sapphire-state-",
                                clusters={"namespace": namespace, "state_namespace": state_namespace},
                                backup_store=True, variables={"postgres_pgbackrest": False})
    env = Regions(servers, local_clusters, namespace, state_namespace)
    try:
        result = env.run("deploy.yml")
        assert result.rc == 0, result.explain()
        yield env
    finally:
        servers.stop()
        local_clusters.drop_namespaces(namespace, state_namespace)


def test_the_first_writer_records_the_home_layout_in_every_cluster_and_leaves_no_lock(regions: Regions) -> None:
    for cluster in ("local-primary", "local-dr"):
        state = regions.state(cluster)
        assert state is not None and state["epoch"] == 0 and state["live_region"] == "primary", (cluster, state)
    # The run's renewer gives the lock back within a second or two of the run's end.
    wait_for(lambda: regions.lease_holder() == "", timeout=20, what="the deploy's lock released after the run")


def test_no_cluster_reachable_a_writer_refuses_before_any_write(regions: Regions) -> None:
    before = regions.servers.redis("redis-primary").dbsize()
    result = regions.run("backup.yml", k8s_kubeconfig="/nonexistent/kubeconfig")
    assert result.rc != 0
    message = " ".join("\n".join(result.failure_messages()).split())
    assert "No cluster could be read" in message and "sapphire_state_from_cache=true" in message, message
    assert "Nothing was written" in message
    assert not (regions.servers.local_dir / "backups").exists() and regions.servers.manifests() == []
    assert regions.servers.redis("redis-primary").dbsize() == before


def test_a_bad_state_option_is_refused_by_name_before_the_lock_or_a_write(regions: Regions) -> None:
    """The platform state's options are checked once for the run (the role's first task), before it reads the state
    or takes the lock."""
    before = regions.state("local-primary")
    result = regions.run("deploy.yml", sapphire_state_lock_duration_seconds="soon")
    assert result.rc != 0
    message = " ".join("\n".join(result.failure_messages()).split())
    assert "sapphire_state_lock_duration_seconds" in message, message
    assert regions.state("local-primary") == before and regions.lease_holder() == ""


def test_a_second_writer_is_refused_naming_the_first_and_emergency_stop_is_not(regions: Regions) -> None:
    command = [str(VENV_BIN / "ansible-playbook"), "deploy.yml", "-i", str(regions.servers.inventory), "-e",
               json.dumps({"trading_agents": AGENTS})]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "playbook=deploy" in regions.lease_holder(), timeout=120, what="deploy holding the lock")
        second = regions.run("rollback.yml")
        assert second.rc != 0
        message = " ".join("\n".join(second.failure_messages()).split())
        assert "playbook=deploy" in message, message
        # The kill switch never waits for the lock.
        stop = regions.run("emergency-stop.yml", **STOP)
        assert stop.rc == 0, stop.explain()
        assert regions.halt("redis-primary")["reason"] == "state test"
    finally:
        first.wait(timeout=600)
    wait_for(lambda: regions.lease_holder() == "", timeout=20, what="the lock released after the first run")
    resume = regions.run("resume.yml")
    assert resume.rc == 0, resume.explain()
    assert regions.halt("redis-primary") is None


def test_after_a_failover_every_playbook_acts_on_the_live_region_from_any_controller(regions: Regions) -> None:
    trading = regions.fence("local-primary")
    assert trading["egress"] == ["agents-exchange-egress", "coordinator-exchange-egress"] and trading["coordinator"]
    assert regions.fence("local-dr")["egress"] == [], "a standby region has no route to the exchanges"
    result = regions.run("dr-failover.yml", **CONFIRM)
    assert result.rc == 0, result.explain()
    for cluster in ("local-primary", "local-dr"):
        state = regions.state(cluster)
        assert state["live_region"] == "dr" and state["epoch"] == 1, (cluster, state)
    # The old region is fenced in its cluster: no route to the exchanges, the coordinator (exchange keys) at zero.
    assert regions.fence("local-primary") == {"egress": [], "coordinator": 0}
    assert regions.fence("local-dr")["egress"] == ["agents-exchange-egress", "coordinator-exchange-egress"]
    # The count the fence kept: the coordinator's HPA (minReplicas 3) may have scaled it up from the Deployment's 1
    # between the first read above and the fence, so the failback is held to the kept count, not to the first read.
    kept = int(json.loads(regions.clusters.kubectl("local-primary", "-n", regions.namespace, "get", "deployment",
                                                   "trading-coordinator", "-o", "json").stdout)
               ["metadata"]["annotations"]["sapphire.io/fenced-replicas"])
    assert kept >= trading["coordinator"]
    # A controller that never ran the failover: no cache.
    regions.cache_file().unlink()

    # The kill switch reads no state before halting: SET NX to every Redis, the live one (redis-dr) takes it.
    stop = regions.run("emergency-stop.yml", **STOP)
    assert stop.rc == 0, stop.explain()
    assert regions.halt("redis-dr")["reason"] == "state test", "the halt flag belongs in the live Redis"
    history = regions.state("local-dr")["history"]
    assert history[-1]["operation"] == "emergency-stop" and history[-1]["reason"] == "state test"

    resume = regions.run("resume.yml")
    assert resume.rc == 0, resume.explain()
    assert regions.halt("redis-dr") is None
    assert regions.cache_file().exists(), "the state read from the clusters is cached again"

    regions.cache_file().unlink()
    deploy = regions.run("deploy.yml")
    assert deploy.rc == 0, deploy.explain()
    assert not in_recovery(regions.servers, "pg-dr"), "the promoted PostgreSQL must stay the primary"
    assert regions.servers.redis("redis-dr").info("replication")["role"] == "master"
    assert regions.servers.redis("redis-primary").info("replication")["role"] == "slave"
    assert regions.fence("local-primary") == {"egress": [], "coordinator": 0}, "a deploy must not lift the fence"

    back = regions.run("dr-failback.yml", **CONFIRM)
    assert back.rc == 0, back.explain()
    restored = regions.fence("local-primary")
    assert restored["egress"] == ["agents-exchange-egress", "coordinator-exchange-egress"]
    # Back to the kept count; from there the HPA (minReplicas 3) owns it again and may already have raised it.
    assert restored["coordinator"] in {kept, max(kept, 3)}, (restored, kept)
    assert regions.fence("local-dr") == {"egress": [], "coordinator": 0}
    state = regions.state("local-primary")
    assert state["live_region"] == "primary" and state["epoch"] == 2 and state["host_overrides"] == {}
    assert not in_recovery(regions.servers, "pg-primary")
    assert regions.servers.redis("redis-primary").info("replication")["role"] == "master"


def test_the_higher_epoch_wins_and_the_older_cluster_is_repaired(regions: Regions) -> None:
    newer = regions.state("local-primary")
    assert newer is not None
    older = {**newer, "epoch": newer["epoch"] - 1, "live_region": "dr"}
    patch = json.dumps({"data": {"state.json": json.dumps(older)}})
    regions.clusters.kubectl("local-dr", "-n", regions.state_namespace, "patch", "configmap", "sapphire-state",
                             "--type", "merge", "-p", patch)
    # The next writer (a backup) reads the higher epoch, backs up the live primary and repairs local-dr.
    backup = regions.run("backup.yml", backup_components=["redis"])
    assert backup.rc == 0, backup.explain()
    manifests = regions.servers.manifests()
    assert [item["components"]["redis"]["host"] for item in manifests] == ["redis-primary"]
    repaired = regions.state("local-dr")
    assert repaired["epoch"] == newer["epoch"] and repaired["live_region"] == "primary"


def test_the_kubernetes_state_is_backed_up_per_id_and_a_live_restore_brings_it_back(regions: Regions) -> None:
    """backup.yml keeps the live cluster's objects, release records and platform state per backup id, in every
    region's bucket, without a Secret; restore.yml brings deleted objects back, leaves the workloads to deploy.yml and
    never writes an older platform state over the clusters'; a changed object is refused."""
    state = regions.state("local-primary")
    backup = regions.run("backup.yml", backup_components=["kubernetes"])
    assert backup.rc == 0, backup.explain()
    manifest = regions.servers.manifests()[-1]
    assert list(manifest["components"]) == ["kubernetes"]
    kubernetes = manifest["components"]["kubernetes"]
    holds = kubernetes["holds"]
    assert holds["state_epoch"] == state["epoch"] and holds["live_region"] == "primary", holds
    assert holds["kinds"]["NetworkPolicy"] >= 2 and holds["kinds"]["Deployment"] >= 3 and holds["release"], holds
    assert holds["release"] in holds["releases"]
    assert kubernetes["verified"].startswith("restored from bucket sapphire-test-primary"), kubernetes
    client = regions.servers.s3()
    key = f"kubernetes/{manifest['id']}/kubernetes.json"
    for bucket in ("sapphire-test-primary", "sapphire-test-dr"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"]["sha256"] == kubernetes["files"][0]["sha256"]
    body = client.get_object(Bucket="sapphire-test-primary", Key=key)["Body"].read()
    assert '"kind": "Secret"' not in body.decode() and '"kind":"Secret"' not in body.decode()
    for secret in regions.servers.secrets.values():
        assert secret not in body.decode(), "a vault value reached the Kubernetes backup"
    assert not (regions.servers.local_dir / "backups" / "kubernetes" / manifest["id"]).exists()

    # An operator's mistake: the release pointer and an exchange egress policy deleted.
    for kind, name in (("configmap", "sapphire-releases"), ("networkpolicy", "agents-exchange-egress")):
        regions.clusters.kubectl("local-primary", "-n", regions.namespace, "delete", kind, name)
    coordinator = regions.fence("local-primary")["coordinator"]
    refused = regions.run("restore.yml", restore_components=["kubernetes"], restore_target="live")
    assert refused.rc != 0 and refused.changed == 0, refused.changed_tasks()
    restore = regions.run("restore.yml", restore_components=["kubernetes"], restore_target="live", **CONFIRM)
    assert restore.rc == 0, restore.explain()
    assert regions.fence("local-primary") == {"egress": ["agents-exchange-egress", "coordinator-exchange-egress"],
                                              "coordinator": coordinator}
    pointer = json.loads(regions.clusters.kubectl("local-primary", "-n", regions.namespace, "get", "configmap",
                                                  "sapphire-releases", "-o", "json").stdout)
    assert pointer["data"]["current"] == holds["release"]
    assert regions.state("local-primary")["epoch"] == state["epoch"], "an older platform state was written back"

    # A changed object is refused before anything is applied; the other region's copy restores.
    client.put_object(Bucket="sapphire-test-primary", Key=key, Body=body.replace(b'"epoch"', b'"epocx"'))
    tampered = regions.run("restore.yml", restore_components=["kubernetes"], restore_backup=manifest["id"])
    assert tampered.rc != 0
    message = " ".join("\n".join(tampered.failure_messages()).split())
    assert "does not match the sha256 in manifest.json" in message, message
    other = regions.run("restore.yml", restore_components=["kubernetes"], restore_backup=manifest["id"],
                        restore_region="dr")
    assert other.rc == 0, other.explain()
