"""redis role, Kubernetes and external modes: what the role renders, and what the API server admits.

The rendering tests need no cluster: the role runs on a fake cluster host with
redis_kubernetes_apply=false and writes its objects to redis_kubernetes_manifest_path. The
apply tests run when the local clusters exist (`.local/clusters/*/kubeconfig`): they apply
into a throw-away namespace labelled Pod Security `restricted`, with the Secret,
ServiceAccount and a PriorityClass the test creates itself, and check that the pod is admitted
and its PVC binds; and that external mode points the Service `redis` at a real Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sapphire_testlib import redis_permission_problems, wait_for

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = f"render-{uuid.uuid4().hex}"
USER_PASSWORDS = {name: f"{name.split('_')[1]}-{uuid.uuid4().hex}"
                  for name in ("redis_agent_password", "redis_replication_password", "redis_monitor_password")}
PLAY = [{"name": "Deploy Redis for a cluster", "hosts": "clusters", "gather_facts": False,
         "roles": [{"role": "redis"}]}]


def cluster_inventory(path: Path, kubeconfig: str, context: str, **variables: Any) -> Path:
    path.write_text(yaml.safe_dump({"all": {
        "children": {"clusters": {"hosts": {"redis-test-cluster": {
            "k8s_kubeconfig": kubeconfig, "k8s_context": context}}}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "sapphire_namespace": "trading-system", "sapphire_release": "2026.11.0",
                 "sapphire_local_dir": str(path.parent / "local"),  # the platform CA of this test
                 "redis_password": PASSWORD, **USER_PASSWORDS, **variables},
    }}))
    return path


def render(run: Callable[..., Any], tmp: Path, **variables: Any) -> tuple[Any, list[dict[str, Any]]]:
    tmp.mkdir(parents=True, exist_ok=True)
    playbook = tmp / "play.yml"
    playbook.write_text(yaml.safe_dump(PLAY))
    manifest = tmp / "redis-objects.yml"
    inventory = cluster_inventory(tmp / "hosts.yml", "/nonexistent", "none", redis_mode="kubernetes",
                                  redis_kubernetes_apply=False, redis_kubernetes_manifest_path=str(manifest),
                                  **variables)
    result = run(str(playbook), inventory)
    objects = yaml.safe_load(manifest.read_text()) if manifest.exists() else []
    return result, objects


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory, playbook_runner: Callable[..., Any]) -> list[dict[str, Any]]:
    result, rendered = render(playbook_runner, tmp_path_factory.mktemp("redis-render"))
    assert result.rc == 0, result.explain()
    return rendered


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_renders_configmap_services_statefulset_without_pdb(objects: list[dict[str, Any]]) -> None:
    names = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert names == [("ConfigMap", "redis-client"), ("ConfigMap", "redis-config"), ("Service", "redis"),
                     ("Service", "redis-headless"), ("StatefulSet", "redis")]
    service = next(o for o in by_kind(objects, "Service") if o["metadata"]["name"] == "redis")
    assert service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "redis-0"
    assert service["spec"]["ports"][0]["port"] == 6379
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert obj["metadata"]["namespace"] == "trading-system"
        assert labels["app.kubernetes.io/part-of"] == "sapphire"
        assert labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
        assert labels["app.kubernetes.io/component"] == "redis"
        assert labels["app.kubernetes.io/version"] == "2026.11.0"


def test_config_carries_seed_settings_and_no_password(objects: list[dict[str, Any]]) -> None:
    conf = by_kind(objects, "ConfigMap")[0]["data"]["redis.conf"]
    lines = {line.strip() for line in conf.splitlines()}
    assert {"maxmemory 2gb", "maxmemory-policy allkeys-lru", "appendonly yes",
            "save 900 1", "save 300 10", "save 60 10000"} <= lines
    assert not any(line.startswith(("requirepass", "masterauth")) for line in lines)
    assert PASSWORD not in json.dumps(objects)
    assert not any(value in json.dumps(objects) for value in USER_PASSWORDS.values())


def test_statefulset_meets_pod_security_restricted_and_contract(objects: list[dict[str, Any]]) -> None:
    sts = by_kind(objects, "StatefulSet")[0]
    spec = sts["spec"]
    assert spec["replicas"] == 1
    claim = spec["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "20Gi"
    assert "storageClassName" not in claim  # the cluster's default StorageClass
    pod = spec["template"]["spec"]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9121"
    assert pod["priorityClassName"] == "sapphire-trading-critical"
    assert pod["serviceAccountName"] == "redis" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"redis", "redis-exporter"}
    assert containers["redis-exporter"]["ports"][0]["containerPort"] == 9121
    assert containers["redis-exporter"]["image"].startswith("oliver006/redis_exporter:v")
    for container in containers.values():
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["readOnlyRootFilesystem"] is True
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
        assert "readinessProbe" in container and "livenessProbe" in container
        for env in container.get("env", []):
            # Secrets only by reference, never as a literal value.
            assert "value" not in env or "PASSWORD" not in env["name"]
    redis_container = containers["redis"]
    probe = " ".join(redis_container["livenessProbe"]["exec"]["command"])
    assert "redis-cli" in probe and "ping" in probe and "-a " not in probe
    # The administrator's password and each ACL user's, each from its own Secret; the exporter reads as the monitor.
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in redis_container["env"]} == {
        "REDIS_PASSWORD": "redis-credentials", "REDISCLI_AUTH": "redis-credentials",
        "REDIS_AGENT_PASSWORD": "redis-agent-credentials",
        "REDIS_REPLICATION_PASSWORD": "redis-replication-credentials",
        "REDIS_MONITOR_PASSWORD": "redis-monitor-credentials"}
    assert "--requirepass" in redis_container["args"][0]
    exporter = containers["redis-exporter"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in exporter["env"] if "valueFrom" in e} == {
        "redis-monitor-credentials"}


@pytest.mark.servers
def test_the_container_command_starts_redis_with_the_acl_users(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    """The redis container's shell command, run here with the distribution's redis-server (its configuration file
    swapped for a loopback port): the users exist with the passwords of their Secrets and only their permissions."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    sts = by_kind(objects, "StatefulSet")[0]
    (container,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = container["args"][0].replace(
        "redis-server /etc/redis/redis.conf",
        f"redis-server --port {port} --bind 127.0.0.1 --dir {tmp_path} --save '' --appendonly no")
    env = {"PATH": os.environ["PATH"], "HOSTNAME": "redis-0", "REDIS_PASSWORD": PASSWORD,
           **{name.upper(): value for name, value in USER_PASSWORDS.items()}}
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import redis

        wait_for(lambda: redis.Redis(port=port, password=PASSWORD).ping(), 20, "the container's redis-server")
        assert redis_permission_problems(port, {
            "sapphire-agent": USER_PASSWORDS["redis_agent_password"],
            "sapphire-replica": USER_PASSWORDS["redis_replication_password"],
            "sapphire-monitor": USER_PASSWORDS["redis_monitor_password"]}) == []
        assert redis.Redis(port=port, password=PASSWORD).config_get("masteruser")["masteruser"] == "sapphire-replica"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_replicas_add_a_pdb_and_storage_class_is_passed(tmp_path: Path, playbook_runner: Callable[..., Any]) -> None:
    result, rendered = render(playbook_runner, tmp_path, redis_replicas=3, redis_storage_class="fast-ssd")
    assert result.rc == 0, result.explain()
    pdb = by_kind(rendered, "PodDisruptionBudget")
    assert len(pdb) == 1 and pdb[0]["spec"]["maxUnavailable"] == 1
    sts = by_kind(rendered, "StatefulSet")[0]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"


@pytest.mark.parametrize(("variables", "named"), [
    ({"redis_image": "redis:latest"}, "redis_image"),
    ({"redis_exporter_image": "oliver006/redis_exporter"}, "redis_exporter_image"),
    ({"redis_resources": {"requests": {"cpu": "3", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}},
     "redis_resources"),
    ({"redis_maxmemory": "lots"}, "redis_maxmemory"),
])
def test_bad_input_is_rejected_naming_the_variable(tmp_path: Path, playbook_runner: Callable[..., Any],
                                                   variables: dict[str, Any], named: str) -> None:
    result, rendered = render(playbook_runner, tmp_path, **variables)
    assert result.rc != 0
    assert named in " ".join(result.failure_messages())
    assert rendered == []


# --- against the local clusters ---------------------------------------------------------------


@pytest.fixture()
def scratch(local_clusters: Any, tmp_path: Path) -> Iterator[tuple[Any, str, str]]:
    """A restricted namespace with the Secret and ServiceAccount the namespace role would make,
    and a PriorityClass of the test's own (never the shared sapphire-trading-critical)."""
    cluster = "local-primary"
    suffix = uuid.uuid4().hex[:8]
    namespace, priority = f"redis-test-{suffix}", f"redis-test-{suffix}"
    enforce = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": enforce}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "redis", "namespace": namespace}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis-credentials", "namespace": namespace},
         "stringData": {"password": PASSWORD}},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": priority},
         "value": 1000000},
    ]
    manifest = tmp_path / "scratch.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    kubectl = Kubectl(local_clusters, cluster)
    created = kubectl("create", "-f", str(manifest), check=False)
    assert created.returncode == 0, created.stderr
    try:
        yield kubectl, namespace, priority
    finally:
        kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=60s", check=False)
        kubectl("delete", "priorityclass", priority, check=False)
        release_volumes(kubectl, namespace)


class Kubectl:
    """kubectl of the pinned release for one cluster (the conftest helper, or the cached binary)."""

    def __init__(self, clusters: Any, cluster: str) -> None:
        self.clusters, self.cluster = clusters, cluster
        cached = sorted(Path.home().glob(".cache/sapphire-ops/kube/*/kubectl"))
        self.binary = shutil.which("kubectl") or (str(cached[-1]) if cached else None)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.binary is None:
            return self.clusters.kubectl(self.cluster, *args, check=check)
        return subprocess.run([self.binary, "--kubeconfig", str(self.clusters.kubeconfigs[self.cluster]), *args],
                              capture_output=True, text=True, check=check, timeout=120)


def release_volumes(kubectl: Kubectl, namespace: str) -> None:
    """Give the pre-provisioned PVs the test's claims bound back to the pool (reclaim policy Retain)."""
    pvs = json.loads(kubectl("get", "pv", "-o", "json").stdout)["items"]
    for pv in pvs:
        if (pv["spec"].get("claimRef") or {}).get("namespace") == namespace:
            kubectl("patch", "pv", pv["metadata"]["name"], "--type=json",
                             "-p", '[{"op": "remove", "path": "/spec/claimRef"}]', check=False)


def wait_json(kubectl: Kubectl, args: list[str], predicate: Callable[[dict[str, Any]], bool],
              timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        proc = kubectl(*args, "-o", "json", check=False)
        if proc.returncode == 0:
            last = json.loads(proc.stdout)
            if predicate(last):
                return last
        time.sleep(2)
    raise AssertionError(f"timed out waiting on {' '.join(args)}; last state: {json.dumps(last)[:2000]}")


def deploy_in_cluster(tmp_path: Path, scratch: tuple[Any, str, str],
                      playbook_runner: Callable[..., Any]) -> tuple[Any, Callable[[], Any]]:
    """The redis role in kubernetes mode into the scratch namespace of local-primary: the result, and a function that
    runs it again."""
    kubectl, namespace, priority = scratch
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(PLAY))
    inventory = cluster_inventory(tmp_path / "hosts.yml", str(kubectl.clusters.kubeconfigs["local-primary"]),
                                  "local-primary", redis_mode="kubernetes", sapphire_namespace=namespace,
                                  redis_priority_class=priority)

    def run() -> Any:
        return playbook_runner(str(playbook), inventory)

    return run(), run


@pytest.mark.cluster
def test_apply_is_admitted_the_pvc_binds_and_rerun_changes_nothing(
        tmp_path: Path, scratch: tuple[Any, str, str], playbook_runner: Callable[..., Any]) -> None:
    kubectl, namespace, _ = scratch
    result, deploy_again = deploy_in_cluster(tmp_path, scratch, playbook_runner)
    assert result.rc == 0, result.explain()
    pod = wait_json(kubectl, ["-n", namespace, "get", "pod", "redis-0"],
                    lambda p: bool(p.get("spec", {}).get("nodeName")))
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    pvc = wait_json(kubectl, ["-n", namespace, "get", "pvc", "data-redis-0"],
                    lambda p: p.get("status", {}).get("phase") == "Bound")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    events = kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "FailedCreate" not in events
    config = json.loads(kubectl("-n", namespace, "get", "configmap", "redis-config",
                                         "-o", "json").stdout)
    assert PASSWORD not in json.dumps(config)
    assert "kubectl.kubernetes.io/last-applied-configuration" not in config["metadata"].get("annotations", {})
    again = deploy_again()
    assert again.rc == 0, again.explain()
    assert again.changed == 0, f"second apply changed: {again.changed_tasks()}"


@pytest.mark.servers
@pytest.mark.cluster
def test_the_instance_the_statefulset_describes_speaks_tls_only_verified_by_the_service_and_pod_names(
        tmp_path: Path, scratch: tuple[Any, str, str], playbook_runner: Callable[..., Any]) -> None:
    """kwok runs no pod: the redis.conf of the ConfigMap redis-config and the Secret redis-tls the role applied are run
    here with the distribution's redis-server (the pod's paths moved under a temporary directory), and clients set up
    from the ConfigMap redis-client verify it as the pods do; the probes' redis-cli gets its PONG."""
    import base64

    import redis

    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    kubectl, namespace, _ = scratch
    result, _ = deploy_in_cluster(tmp_path, scratch, playbook_runner)
    assert result.rc == 0, result.explain()

    def read(kind: str, name: str) -> dict[str, Any]:
        return json.loads(kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout)

    secret, pod_client = read("secret", "redis-tls"), read("configmap", "redis-client")["data"]
    assert secret["type"] == "kubernetes.io/tls" and pod_client["REDIS_TLS"] == "true"
    (container,) = [c for c in read("statefulset", "redis")["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "redis"]
    probe = container["readinessProbe"]["exec"]["command"][2]
    root = Path(tempfile.mkdtemp(prefix="sapphire-redis-k8s-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (root / "tls").mkdir()
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (root / "tls" / key).write_bytes(base64.b64decode(secret["data"][key]))
    conf = (read("configmap", "redis-config")["data"]["redis.conf"].replace("/etc/redis/tls", str(root / "tls"))
            .replace("dir /data", f"dir {root}").replace("tls-port 6379", f"tls-port {port}")
            .replace("bind * -::*", "bind 127.0.0.1"))
    (root / "redis.conf").write_text(conf)
    proc = subprocess.Popen(["redis-server", str(root / "redis.conf"), "--requirepass", PASSWORD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ca = root / "pod-ca.crt"
        ca.write_text(pod_client["ca.crt"])
        tls_client = {"port": port, "password": PASSWORD, "ssl": True, "ssl_ca_certs": str(ca), "socket_timeout": 3}
        wait_for(lambda: redis.Redis(host="127.0.0.1", **tls_client).ping(), 20, "the instance of redis-config")
        # The plain port is closed.
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=3).ping()
        # A pod dials the Service; a replica dials pod 0 by its headless name: the certificate carries both.
        context = ssl.create_default_context(cafile=str(ca))
        for name in (pod_client["REDIS_HOST"], f"redis.{namespace}.svc", f"redis-0.redis-headless.{namespace}.svc"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=name):
                pass
        # The probes' command, its CA at the pod's path moved here.
        probed = subprocess.run(["sh", "-c", probe.replace("/etc/redis/tls", str(root / "tls"))
                                 .replace("-p 6379", f"-p {port}")], env={**os.environ, "REDISCLI_AUTH": PASSWORD},
                                capture_output=True, text=True, timeout=20, check=False)
        assert probed.returncode == 0, probed.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def managed_redis() -> Iterator[tuple[int, str]]:
    """A plain redis-server standing in for ElastiCache: password, allkeys-lru, AOF."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    root = Path(tempfile.mkdtemp(prefix="sapphire-redis-managed-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = secrets.token_hex(12)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
                             "--requirepass", password, "--maxmemory-policy", "allkeys-lru", "--appendonly", "yes",
                             "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port, password=password).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.2)
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.servers
@pytest.mark.cluster
def test_external_mode_points_the_service_and_reports_differences(
        tmp_path: Path, scratch: tuple[Any, str, str], managed_redis: tuple[int, str],
        playbook_runner: Callable[..., Any]) -> None:
    kubectl, namespace, _ = scratch
    port, password = managed_redis
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(PLAY))
    common = {"redis_mode": "external", "sapphire_namespace": namespace, "redis_external_host": "127.0.0.1",
              "redis_external_port": port, "redis_external_tls": False}  # the stand-in managed server is plain
    inventory = cluster_inventory(tmp_path / "hosts.yml", str(kubectl.clusters.kubeconfigs["local-primary"]),
                                  "local-primary", **common)
    # The inventory's password is the vault one; the managed server's is passed like an operator would.
    result = playbook_runner(str(playbook), inventory, extra_vars={"redis_password": password})
    assert result.rc == 0, result.explain()
    service = json.loads(kubectl("-n", namespace, "get", "service", "redis", "-o", "json").stdout)
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["port"] == 6379 and service["spec"]["ports"][0]["targetPort"] == port
    # 127.0.0.1 is refused by the API server in an EndpointSlice: the Service stays without one.
    assert service["metadata"]["annotations"]["sapphire.io/redis-endpoint"] == f"127.0.0.1:{port}"
    slices = json.loads(kubectl("-n", namespace, "get", "endpointslices", "-l",
                                "kubernetes.io/service-name=redis", "-o", "json").stdout)["items"]
    assert slices == []
    # The managed server evicts with noeviction where the platform needs allkeys-lru: reported, run fails.
    drift = playbook_runner(str(playbook), inventory, extra_vars={"redis_password": password,
                                                                   "redis_maxmemory_policy": "noeviction"})
    assert drift.rc != 0
    message = " ".join(drift.failure_messages())
    assert "maxmemory-policy" in message and "allkeys-lru" in message, message
    assert password not in drift.stdout + drift.stderr
