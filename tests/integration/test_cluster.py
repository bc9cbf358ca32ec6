"""The local control plane is real: admission, quota, Pod Security and scheduling as an operator sees them."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from sapphire_testlib import REPO_ROOT, LocalClusters, kube_binary, run_playbook

pytestmark = [pytest.mark.cluster]

CLUSTER = "local-primary"


def apply(clusters: LocalClusters, manifest: dict, check: bool = True) -> subprocess.CompletedProcess[str]:
    kubectl = kube_binary("kubectl")
    return subprocess.run([str(kubectl), "--kubeconfig", str(clusters.kubeconfigs[CLUSTER]), "create", "-f", "-"],
                          input=json.dumps(manifest), capture_output=True, text=True, check=check, timeout=60)


def pod_manifest(name: str, namespace: str, *, tpu: int = 0, tolerate: bool = False, cpu: str = "100m",
                 privileged: bool = False) -> dict:
    resources = {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}}
    if tpu:
        resources["requests"]["google.com/tpu"] = str(tpu)
        resources["limits"]["google.com/tpu"] = str(tpu)
    security = {"privileged": True} if privileged else {
        "allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 10001,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    spec: dict = {"containers": [{"name": "main", "image": "registry.example/sapphire/probe:1.0",
                                  "resources": resources, "securityContext": security}]}
    if tolerate:
        spec["tolerations"] = [{"key": "google.com/tpu", "operator": "Equal", "value": "present",
                                "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture()
def namespace(local_clusters: LocalClusters):
    name = f"t-{uuid.uuid4().hex[:8]}"
    local_clusters.kubectl(CLUSTER, "create", "namespace", name)
    yield name
    local_clusters.kubectl(CLUSTER, "delete", "namespace", name, "--wait=false", check=False)


def wait_for_pod(clusters: LocalClusters, namespace: str, name: str, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    pod: dict = {}
    while time.monotonic() < deadline:
        pod = json.loads(clusters.kubectl(CLUSTER, "-n", namespace, "get", "pod", name, "-o", "json").stdout)
        if predicate(pod):
            return pod
        time.sleep(0.5)
    raise AssertionError(f"pod {namespace}/{name} never reached the expected state: {json.dumps(pod.get('status'))}")


def test_node_pools_are_registered_and_ready(local_clusters: LocalClusters) -> None:
    nodes = json.loads(local_clusters.kubectl(CLUSTER, "get", "nodes", "-o", "json").stdout)["items"]
    by_pool: dict[str, list[dict]] = {}
    for node in nodes:
        by_pool.setdefault(node["metadata"]["labels"].get("sapphire.io/pool", ""), []).append(node)
    assert len(by_pool["general"]) >= 3
    assert len(by_pool["heavy"]) >= 1
    assert len(by_pool["tpu"]) >= 2
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert ready.get("Ready") == "True", node["metadata"]["name"]
    for node in by_pool["tpu"]:
        assert node["status"]["allocatable"]["google.com/tpu"] == "4"
        assert node["metadata"]["labels"]["cloud.google.com/gke-tpu-accelerator"]
        assert {"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_tpu_pod_with_toleration_lands_on_a_tpu_node(local_clusters: LocalClusters, namespace: str) -> None:
    apply(local_clusters, pod_manifest("tpu-ok", namespace, tpu=4, tolerate=True))
    pod = wait_for_pod(local_clusters, namespace, "tpu-ok",
                       lambda p: any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions", [])))
    node = json.loads(local_clusters.kubectl(CLUSTER, "get", "node", pod["spec"]["nodeName"], "-o", "json").stdout)
    assert node["metadata"]["labels"]["sapphire.io/pool"] == "tpu"
    assert pod["status"]["phase"] == "Running"


def test_tpu_pod_without_toleration_stays_pending_with_the_schedulers_reason(local_clusters: LocalClusters,
                                                                               namespace: str) -> None:
    apply(local_clusters, pod_manifest("tpu-untolerated", namespace, tpu=4))

    def unschedulable(pod: dict) -> bool:
        return any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                   for c in pod["status"].get("conditions", []))

    pod = wait_for_pod(local_clusters, namespace, "tpu-untolerated", unschedulable)
    message = next(c["message"] for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert pod["status"]["phase"] == "Pending"
    # e.g. "untolerated taint {google.com/tpu: present}" and "Insufficient google.com/tpu"
    assert "google.com/tpu" in message
    assert "spec" in pod and not pod["spec"].get("nodeName")


def test_pod_over_the_resource_quota_is_rejected_by_the_api_server(local_clusters: LocalClusters,
                                                                    namespace: str) -> None:
    apply(local_clusters, {"apiVersion": "v1", "kind": "ResourceQuota",
                           "metadata": {"name": "small", "namespace": namespace},
                           "spec": {"hard": {"requests.cpu": "500m", "limits.cpu": "500m",
                                             "requests.memory": "1Gi", "limits.memory": "1Gi"}}})
    time.sleep(1)  # the quota controller fills status.hard before admission enforces it
    result = apply(local_clusters, pod_manifest("too-big", namespace, cpu="2"), check=False)
    assert result.returncode != 0
    assert "exceeded quota" in result.stderr
    assert "requests.cpu" in result.stderr


def test_privileged_pod_is_rejected_under_pod_security_restricted(local_clusters: LocalClusters,
                                                                   namespace: str) -> None:
    local_clusters.kubectl(CLUSTER, "label", "namespace", namespace,
                           "pod-security.kubernetes.io/enforce=restricted")
    result = apply(local_clusters, pod_manifest("privileged", namespace, privileged=True), check=False)
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr
    assert "privileged" in result.stderr
    compliant = apply(local_clusters, pod_manifest("compliant", namespace), check=False)
    assert compliant.returncode == 0, compliant.stderr


@pytest.mark.slow
def test_second_cluster_run_changes_nothing(local_clusters: LocalClusters) -> None:
    result = run_playbook("playbooks/cluster.yml")
    assert result.rc == 0, result.explain()
    assert result.changed == 0, result.changed_tasks()


def test_a_converged_control_plane_is_recognised_and_a_stopped_process_restarted(
        local_clusters: LocalClusters) -> None:
    """The cluster play's fingerprint: a control plane nothing touched skips the process, port, binary and
    certificate checks; one whose scheduler died converges again and gets it back."""
    fingerprint_task = "cluster : Recognise a local control plane its last converge left as it is"
    detail = "cluster : Find which control plane processes already run as configured"
    first = run_playbook("playbooks/cluster.yml", limit=CLUSTER)  # records the fingerprint when none is there
    assert first.rc == 0, first.explain()
    result = run_playbook("playbooks/cluster.yml", limit=CLUSTER)
    assert result.rc == 0 and result.changed == 0, result.explain()
    assert result.task_results(fingerprint_task)[CLUSTER]["converged"] is True
    assert not result.task_results(detail), "the detailed checks ran on a control plane nothing touched"

    pidfile = local_clusters.kubeconfigs[CLUSTER].parent / "run" / "kube-scheduler.pid"
    pid = int(pidfile.read_text().split()[0])
    subprocess.run(["kill", str(pid)], check=True)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    result = run_playbook("playbooks/cluster.yml", limit=CLUSTER)
    assert result.rc == 0, result.explain()
    reasons = result.task_results(fingerprint_task)[CLUSTER]["reasons"]
    assert reasons == [f"process {pidfile} changed"], reasons
    assert CLUSTER in result.task_results(detail)
    restarted = int(pidfile.read_text().split()[0])
    assert restarted != pid and Path(f"/proc/{restarted}").exists(), "the scheduler was not started again"
    again = run_playbook("playbooks/cluster.yml", limit=CLUSTER)
    assert again.rc == 0 and again.changed == 0, again.explain()
    assert again.task_results(fingerprint_task)[CLUSTER]["converged"] is True


def _scratch_inventory(tmp_path: Path, port_base: int, **host_vars) -> Path:
    host = {"cluster_port_base": port_base, "cluster_provider": "kwok",
            "k8s_kubeconfig": str(tmp_path / "local" / "clusters" / "scratch" / "kubeconfig"),
            "k8s_context": "scratch", **host_vars}
    inventory = {"all": {
        "children": {"clusters": {"children": {"primary": {"hosts": {"scratch": host}}}}},
        "vars": {"ansible_connection": "local", "sapphire_local_dir": str(tmp_path / "local"),
                 "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _free_port_base() -> int:
    for base in range(30000, 60000, 1000):
        if all(_port_free(base + offset) for offset in (247, 257, 259, 379, 380, 443)):
            return base
    raise AssertionError("no free port base")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_unknown_provider_is_rejected_naming_the_variable(tmp_path: Path) -> None:
    inventory = _scratch_inventory(tmp_path, _free_port_base(), cluster_provider="minikube")
    result = run_playbook("playbooks/cluster.yml", inventory, json_output=False)
    assert result.rc != 0
    assert "cluster_provider must be one of: kwok, existing, got: minikube" in result.stdout + result.stderr
    assert not (tmp_path / "local" / "clusters").exists()


def test_taken_port_is_rejected_before_anything_starts(tmp_path: Path) -> None:
    base = _free_port_base()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 443))
        blocker.listen()
        result = run_playbook("playbooks/cluster.yml", _scratch_inventory(tmp_path, base), json_output=False)
    output = result.stdout + result.stderr
    assert result.rc != 0
    assert f"port(s) {base + 443}" in output and "cluster_port_base" in output
    assert not (tmp_path / "local" / "clusters" / "scratch" / "run").exists(), "no process may be started"


def test_missing_kubeconfig_of_an_existing_cluster_is_named(tmp_path: Path) -> None:
    inventory = _scratch_inventory(tmp_path, _free_port_base(), cluster_provider="existing",
                                   k8s_kubeconfig=str(tmp_path / "nowhere" / "kubeconfig"))
    result = run_playbook("playbooks/cluster.yml", inventory, json_output=False)
    assert result.rc != 0
    assert "k8s_kubeconfig" in result.stdout and "does not exist" in result.stdout


def test_existing_provider_reports_exactly_what_is_missing(local_clusters: LocalClusters) -> None:
    pools = [{"name": "gpu", "count": 1, "cpu": "8", "memory": "32Gi", "labels": {"sapphire.io/pool": "gpu"}},
             {"name": "tpu", "count": 1, "cpu": "8", "memory": "32Gi", "labels": {"sapphire.io/pool": "tpu"},
              "accelerator": {"resource": "google.com/tpu", "count": 8}}]
    result = run_playbook("playbooks/cluster.yml", limit=CLUSTER, json_output=False,
                          extra_vars={"cluster_provider": "existing", "cluster_node_pools": pools})
    assert result.rc != 0
    assert "node pool 'gpu' has no node labelled sapphire.io/pool=gpu" in result.stdout
    assert "node pool 'tpu': no node advertises 8 google.com/tpu allocatable" in result.stdout
    ok = run_playbook("playbooks/cluster.yml", limit=CLUSTER, extra_vars={"cluster_provider": "existing"})
    assert ok.rc == 0, ok.explain()


def test_build_without_go_names_the_missing_tool(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SAPPHIRE_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    result = subprocess.run([str(REPO_ROOT / "tools" / "kube" / "build")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode != 0
    assert "'go' is not installed" in result.stderr
    assert "install Go" in result.stderr
