"""sapphire_state against the two local clusters: the platform state and the operations lock (issue 11).

Every test uses its own namespace (it-state-<random>), never sapphire-system, so the real platform state
and lock are never touched; the namespace is deleted afterwards in both clusters. The module runs the way
playbooks run it: one task on localhost through ansible-playbook.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, PlaybookResult, run_playbook, wait_for

pytestmark = pytest.mark.cluster

CLUSTERS = ("local-dr", "local-primary")  # lease order: by name
A = {"playbook": "deploy.yml", "user": "alice", "controller": "ctl-1", "awx_job_id": ""}
B = {"playbook": "dr-failover.yml", "user": "bob", "controller": "ctl-2", "awx_job_id": 42}
A_ID = "playbook=deploy.yml user=alice controller=ctl-1 awx_job=-"
B_ID = "playbook=dr-failover.yml user=bob controller=ctl-2 awx_job=42"


class StateRunner:
    """Runs sapphire_state in a one-task playbook against the local clusters, in one test namespace."""

    def __init__(self, clusters: LocalClusters, namespace: str, directory: Path) -> None:
        self.clusters = clusters
        self.namespace = namespace
        self.directory = directory
        self.specs = [{"name": name, "kubeconfig": str(clusters.kubeconfigs[name]), "context": ""}
                      for name in ("local-primary", "local-dr")]

    def args(self, action: str, clusters: list[dict] | None = None, **args: Any) -> dict[str, Any]:
        return {"action": action, "namespace": self.namespace, "clusters": clusters or self.specs,
                "request_timeout": 3, **args}

    def playbook(self, tasks: list[dict[str, Any]], check: bool = False, diff: bool = False) -> PlaybookResult:
        playbook = self.directory / f"state-{uuid.uuid4().hex[:8]}.yml"
        playbook.write_text(json.dumps([{
            "name": "sapphire_state", "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "tasks": tasks}]))
        return run_playbook(str(playbook), inventory="localhost,", check=check, diff=diff, timeout=300)

    def __call__(self, action: str, *, check: bool = False, diff: bool = False, clusters: list[dict] | None = None,
                 **args: Any) -> tuple[int, dict[str, Any]]:
        result = self.playbook([{"name": "state", "sapphire_state": self.args(action, clusters, **args)}], check,
                               diff)
        hosts = result.task_results("state")
        assert "localhost" in hosts, result.explain()
        return result.rc, hosts["localhost"]

    # direct API access, to arrange what another controller would have written
    def core(self, cluster: str) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.clusters.client(cluster))

    def coordination(self, cluster: str) -> Any:
        from kubernetes import client

        return client.CoordinationV1Api(self.clusters.client(cluster))

    def state(self, cluster: str) -> dict[str, Any]:
        obj = self.core(cluster).read_namespaced_config_map("sapphire-state", self.namespace)
        return json.loads(obj.data["state.json"])

    def set_state(self, cluster: str, state: dict[str, Any]) -> None:
        obj = self.core(cluster).read_namespaced_config_map("sapphire-state", self.namespace)
        obj.data["state.json"] = json.dumps(state)
        self.core(cluster).replace_namespaced_config_map("sapphire-state", self.namespace, obj)

    def lease(self, cluster: str) -> Any:
        return self.coordination(cluster).read_namespaced_lease("sapphire-operations", self.namespace)

    def holder(self, cluster: str) -> str | None:
        return self.lease(cluster).spec.holder_identity

    def set_lease(self, cluster: str, holder: str, renewed_ago: float, duration: int = 120) -> None:
        from datetime import UTC, datetime, timedelta

        lease = self.lease(cluster)
        moment = datetime.now(UTC) - timedelta(seconds=renewed_ago)
        lease.spec.holder_identity = holder
        lease.spec.acquire_time = moment
        lease.spec.renew_time = moment
        lease.spec.lease_duration_seconds = duration
        self.coordination(cluster).replace_namespaced_lease("sapphire-operations", self.namespace, lease)


@pytest.fixture
def state(local_clusters: LocalClusters, tmp_path: Path) -> Iterator[StateRunner]:
    runner = StateRunner(local_clusters, f"it-state-{uuid.uuid4().hex[:8]}", tmp_path)
    yield runner
    for cluster in CLUSTERS:
        local_clusters.kubectl(cluster, "delete", "namespace", runner.namespace, "--ignore-not-found",
                               "--wait=false", check=False)


def test_state_is_read_written_merged_by_epoch_and_never_goes_back(state: StateRunner) -> None:
    rc, fresh = state("read")
    assert rc == 0 and fresh["found"] is False and fresh["state"]["epoch"] == 0 and fresh["reachable"] == 2
    assert fresh["state"]["live_region"] == "primary" and sorted(fresh["stale"]) == sorted(CLUSTERS)

    rc, written = state("write", state={"epoch": 1, "live_region": "primary", "host_overrides": {}},
                        history_entry={"operation": "deploy"}, holder=A)
    assert rc == 0 and written["changed"] and sorted(written["written"]) == sorted(CLUSTERS)
    for cluster in CLUSTERS:
        saved = state.state(cluster)
        assert saved["epoch"] == 1 and saved["updated_by"] == A_ID and saved["history"][0]["operation"] == "deploy"
    namespace = state.core("local-primary").read_namespace(state.namespace)
    assert namespace.metadata.labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
    rc, again = state("write", state={"epoch": 1, "live_region": "primary", "host_overrides": {}}, holder=A)
    assert rc == 0 and again["changed"] is False and again["written"] == []

    # another controller wrote epoch 2 to local-dr only: local-dr wins, local-primary is stale
    newer = {**state.state("local-dr"), "epoch": 2, "live_region": "dr"}
    state.set_state("local-dr", newer)
    rc, merged = state("read")
    assert rc == 0 and merged["state"]["epoch"] == 2 and merged["state"]["live_region"] == "dr"
    assert merged["stale"] == ["local-primary"] and merged["source"] == "local-dr" and merged["found"] is True
    assert {item["name"]: item["epoch"] for item in merged["clusters"]} == {"local-primary": 1, "local-dr": 2}

    rc, refused = state("write", state={"epoch": 1, "live_region": "primary", "host_overrides": {}}, holder=A)
    assert rc != 0 and "refusing" in refused["msg"] and "local-dr holds epoch 2" in refused["msg"]
    assert state.state("local-primary")["epoch"] == 1

    rc, planned = state("write", check=True, diff=True, state={"epoch": 3, "live_region": "primary",
                                                              "host_overrides": {}}, holder=A)
    assert rc == 0 and planned["changed"] and sorted(planned["written"]) == sorted(CLUSTERS)
    assert planned["diff"]["before"]["epoch"] == 2 and planned["diff"]["after"]["epoch"] == 3
    assert state.state("local-dr")["epoch"] == 2  # check mode wrote nothing

    rc, recorded = state("record", history_entry={"operation": "emergency-stop", "reason": "drill"},
                         holder={"playbook": "emergency-stop.yml"})
    assert rc == 0 and recorded["changed"]
    for cluster in CLUSTERS:  # the winner's epoch and region, now everywhere, with the entry once
        saved = state.state(cluster)
        assert (saved["epoch"], saved["live_region"]) == (2, "dr")
        assert [item["operation"] for item in saved["history"]].count("emergency-stop") == 1


def test_an_unreachable_cluster_is_data_for_read(state: StateRunner, tmp_path: Path) -> None:
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "dead", "user": {"token": "x"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "dead"}}]}))
    clusters = [*state.specs, {"name": "bogus", "kubeconfig": str(tmp_path / "missing"), "context": ""},
                {"name": "down", "kubeconfig": str(dead), "context": ""}]
    started = time.monotonic()
    rc, result = state("read", clusters=clusters)
    assert rc == 0, result.get("msg")
    reachable = {item["name"]: item["reachable"] for item in result["clusters"]}
    assert reachable == {"local-primary": True, "local-dr": True, "bogus": False, "down": False}
    errors = {item["name"]: item["error"] for item in result["clusters"]}
    assert "missing" in errors["bogus"] and "cannot reach" in errors["down"]
    assert result["reachable"] == 2 and time.monotonic() - started < 60


def test_the_operations_lock(state: StateRunner) -> None:
    rc, taken = state("acquire", holder=A)
    assert rc == 0 and taken["changed"] and taken["acquired"] == list(CLUSTERS) and taken["holder"] == A_ID
    assert all(state.holder(cluster) == A_ID for cluster in CLUSTERS)
    spec = state.lease("local-primary").spec
    assert spec.lease_duration_seconds == 120 and spec.acquire_time and spec.renew_time

    rc, reentrant = state("acquire", holder=A)
    assert rc == 0 and reentrant["acquired"] == list(CLUSTERS) and reentrant["took_over"] is None

    rc, refused = state("acquire", holder=B)
    assert rc != 0 and A_ID in refused["msg"] and "since" in refused["msg"] and "goes stale in" in refused["msg"]
    assert "sapphire_lock_break=true" in refused["msg"]
    assert all(state.holder(cluster) == A_ID for cluster in CLUSTERS)

    rc, checked = state("acquire", holder=B, check=True)
    assert rc == 0 and checked["acquired"] == [] and checked["held"]["holder"] == A_ID

    rc, broken = state("acquire", holder=B, break_lock=True, break_reason="alice's controller died")
    assert rc == 0 and broken["took_over"]["how"] == "broken" and broken["took_over"]["holder"] == A_ID
    for cluster in CLUSTERS:
        lease = state.lease(cluster)
        assert lease.spec.holder_identity == B_ID
        note = lease.metadata.annotations["sapphire.io/broken"]
        assert note.startswith(B_ID) and "alice's controller died" in note and A_ID in note

    rc, not_ours = state("release", holder=A)
    assert rc == 0 and not_ours["changed"] is False and state.holder("local-dr") == B_ID

    rc, released = state("release", holder=B)
    assert rc == 0 and released["changed"] and released["released"] == list(CLUSTERS)
    assert all(state.holder(cluster) is None for cluster in CLUSTERS)

    # a holder that stopped renewing an hour ago is taken over without breaking
    for cluster in CLUSTERS:
        state.set_lease(cluster, "playbook=restore.yml user=carol controller=ctl-3 awx_job=-", renewed_ago=3600)
    rc, stale = state("acquire", holder=A)
    assert rc == 0 and stale["took_over"]["how"] == "stale" and "carol" in stale["took_over"]["holder"]
    assert all(state.holder(cluster) == A_ID for cluster in CLUSTERS)
    rc, _ = state("release", holder=A)
    assert rc == 0 and all(state.holder(cluster) is None for cluster in CLUSTERS)


def test_the_renewer_keeps_the_lock_while_the_playbook_runs_and_releases_it_after(state: StateRunner) -> None:
    # ansible-playbook itself takes a few seconds to start: the watched process must outlive that
    playbook = subprocess.Popen(["sleep", "14"])
    try:
        rc, taken = state("acquire", holder=A, watch_pid=playbook.pid, lease_duration_seconds=20)
        assert rc == 0 and taken["renewer_pid"], taken.get("msg")
        first = {cluster: state.lease(cluster).spec.renew_time for cluster in CLUSTERS}
        wait_for(lambda: all(state.lease(cluster).spec.renew_time > first[cluster] for cluster in CLUSTERS),
                 20, "the renewer to renew the leases", interval=1)
        assert all(state.holder(cluster) == A_ID for cluster in CLUSTERS)
        # the sleep ends and stays a zombie (not reaped): that counts as gone
        wait_for(lambda: all(state.holder(cluster) is None for cluster in CLUSTERS), 40,
                 "the renewer to release the leases after the watched process ended", interval=1)
        wait_for(lambda: not Path(f"/proc/{taken['renewer_pid']}").exists()
                 or "Z" in Path(f"/proc/{taken['renewer_pid']}/stat").read_text().rsplit(")", 1)[1].split()[0],
                 20, "the renewer to exit")
    finally:
        playbook.kill()
        playbook.wait()


def test_a_playbook_holds_the_lock_until_it_ends_with_watch_pid_zero(state: StateRunner) -> None:
    result = state.playbook([
        {"name": "take", "sapphire_state": state.args("acquire", holder=A, watch_pid=0, lease_duration_seconds=20)},
        {"name": "work", "ansible.builtin.pause": {"seconds": 5}},  # the worker of "take" is long gone by now
        {"name": "other run", "check_mode": True, "sapphire_state": state.args("acquire", holder=B)},
    ])
    assert result.rc == 0, result.explain()
    taken = result.task_results("take")["localhost"]
    assert taken["watched_pid"] and taken["renewer_pid"]
    held = result.task_results("other run")["localhost"]["held"]["holder"]
    # Still held mid-playbook, by A in this run (watch_pid 0 adds run=<controller>:<ansible-playbook pid>).
    assert held == f"{A_ID} run={socket.gethostname()}:{taken['watched_pid']}", held
    wait_for(lambda: all(state.holder(cluster) is None for cluster in CLUSTERS), 30,
             "the renewer to release the leases after ansible-playbook ended", interval=1)
