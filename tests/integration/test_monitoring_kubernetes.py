"""Kubernetes mode of the monitoring role: the rendered objects (monitoring_manifest_file) meet
the platform's rules, ship the promtool-tested rules and the seed-004 dashboards, keep secrets out
of ConfigMaps, and, on the local cluster, are admitted under Pod Security "restricted".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

PLAYBOOK = "tests/integration/playbooks/monitoring.yml"
ROLE = Path(__file__).resolve().parents[2] / "roles" / "monitoring"
TOKEN = "123456:never-in-a-configmap"

pytestmark = pytest.mark.slow


def write_inventory(directory: Path, host: dict[str, Any], extra: dict[str, Any]) -> Path:
    inventory = {"all": {
        "children": {"clusters": {"hosts": {"test-cluster": host}}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "sapphire_release": "2026.11.0", "monitoring_mode": "kubernetes", **extra},
    }}
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, playbook_runner: Any) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("monitoring-k8s")
    manifest = directory / "objects.yml"
    inventory = write_inventory(directory, {"k8s_kubeconfig": "/nonexistent", "k8s_context": "none"}, {
        "sapphire_namespace": "trading-system",
        "monitoring_manifest_file": str(manifest),
        "monitoring_telegram_chat_id": -100123,
        "sapphire_telegram_bot_token": TOKEN,
    })
    result = playbook_runner(PLAYBOOK, inventory)
    assert result.rc == 0, result.explain()
    document = yaml.safe_load(manifest.read_text())
    assert document["kind"] == "List"
    return document["items"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]


def test_every_container_is_restricted_sized_pinned_and_probed(rendered: list[dict[str, Any]]) -> None:
    assert {obj["metadata"]["name"] for obj in workloads(rendered)} == {"prometheus", "alertmanager", "grafana"}
    for workload in workloads(rendered):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"configMap", "secret", "emptyDir", "persistentVolumeClaim",
                                              "projected", "downwardAPI", "csi", "ephemeral"}, (name, volume)
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["readOnlyRootFilesystem"] is True, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), where
            assert "readinessProbe" in container and "livenessProbe" in container, where


def test_every_object_carries_the_platform_labels(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "sapphire", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
        assert labels["app.kubernetes.io/component"] in {"prometheus", "alertmanager", "grafana"}
        assert labels["app.kubernetes.io/version"] == "2026.11.0"
        assert obj["metadata"]["namespace"] == "trading-system"


def test_prometheus_keeps_30_days_on_50gi_and_discovers_the_namespace(rendered: list[dict[str, Any]]) -> None:
    prometheus = by_kind(rendered, "StatefulSet")["prometheus"]
    pod = prometheus["spec"]["template"]["spec"]
    assert "--storage.tsdb.retention.time=30d" in pod["containers"][0]["args"]
    # no lifecycle API (/-/quit would let anyone who reaches the pod stop it): a new configuration rolls the pod
    assert "--web.enable-lifecycle" not in pod["containers"][0]["args"]
    assert prometheus["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pod["serviceAccountName"] == "prometheus"
    assert pod["automountServiceAccountToken"] is True
    config = yaml.safe_load(by_kind(rendered, "ConfigMap")["prometheus-config"]["data"]["prometheus.yml"])
    discovery = [job["kubernetes_sd_configs"][0] for job in config["scrape_configs"] if "kubernetes_sd_configs" in job]
    assert {sd["role"] for sd in discovery} == {"pod", "endpoints"}
    assert all(sd["namespaces"]["names"] == ["trading-system"] for sd in discovery)
    for workload in ("alertmanager", "grafana"):
        found = by_kind(rendered, "StatefulSet") | by_kind(rendered, "Deployment")
        assert found[workload]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed; run tools/setup-packages")


@needs_promtool
def test_the_rules_configmap_is_the_promtool_tested_rule_set(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    rules = by_kind(rendered, "ConfigMap")["prometheus-rules"]["data"]["sapphire-alerts.yml"]
    (tmp_path / "sapphire-alerts.rules.yml").write_text(rules)
    shutil.copy(ROLE / "files" / "tests" / "sapphire-alerts.test.yml", tmp_path)
    tested = subprocess.run(["promtool", "test", "rules", "sapphire-alerts.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_the_prometheus_configmap_passes_promtool(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(by_kind(rendered, "ConfigMap")["prometheus-config"]["data"]["prometheus.yml"])
    checked = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    if "field kubernetes_sd_configs not found" in checked.stdout + checked.stderr:
        pytest.skip("this promtool (Debian's build) has no Kubernetes service discovery; the image's promtool has")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_is_replicated_with_a_pdb_and_reads_the_token_from_the_secret(
        rendered: list[dict[str, Any]]) -> None:
    alertmanager = by_kind(rendered, "StatefulSet")["alertmanager"]
    assert alertmanager["spec"]["replicas"] == 2
    assert by_kind(rendered, "PodDisruptionBudget")["alertmanager"]["spec"]["minAvailable"] == 1
    volumes = {volume["name"]: volume for volume in alertmanager["spec"]["template"]["spec"]["volumes"]}
    assert volumes["telegram"]["secret"]["secretName"] == "telegram-credentials"
    config = yaml.safe_load(by_kind(rendered, "ConfigMap")["alertmanager-config"]["data"]["alertmanager.yml"])
    routes = {route["matchers"][0]: route["receiver"] for route in config["route"]["routes"]}
    assert routes == {'severity="critical"': "pager", 'severity="warning"': "chat"}
    assert TOKEN not in json.dumps(rendered), "the Telegram bot token leaked into a rendered object"


def test_grafana_provisions_the_prometheus_datasource_and_the_four_dashboards(rendered: list[dict[str, Any]]) -> None:
    configmaps = by_kind(rendered, "ConfigMap")
    datasources = yaml.safe_load(configmaps["grafana-provisioning"]["data"]["datasources.yml"])["datasources"]
    assert datasources[0]["type"] == "prometheus"
    assert datasources[0]["url"] == "http://prometheus.trading-system.svc:9090"
    titles = {json.loads(body)["title"] for body in configmaps["grafana-dashboards"]["data"].values()}
    assert titles == {"Trading Overview", "Agent Performance", "System Reliability", "Performance Metrics"}
    for body in configmaps["grafana-dashboards"]["data"].values():
        for panel in json.loads(body)["panels"]:
            assert panel["datasource"]["uid"] == datasources[0]["uid"]
            assert all(target["expr"] for target in panel["targets"])
    grafana = by_kind(rendered, "Deployment")["grafana"]
    env = {item["name"]: item for item in grafana["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "grafana-credentials"
    assert by_kind(rendered, "PersistentVolumeClaim")["grafana-data"]["spec"]["resources"]["requests"]["storage"] \
        == "10Gi"


def test_latest_image_tag_is_refused(tmp_path: Path, playbook_runner: Any) -> None:
    inventory = write_inventory(tmp_path, {"k8s_kubeconfig": "/nonexistent", "k8s_context": "none"}, {
        "sapphire_namespace": "trading-system", "monitoring_manifest_file": str(tmp_path / "objects.yml"),
        "monitoring_grafana_image": "grafana/grafana:latest"})
    result = playbook_runner(PLAYBOOK, inventory)
    assert result.rc != 0
    assert "monitoring_grafana_image" in "\n".join(result.failure_messages())
    assert not (tmp_path / "objects.yml").exists()


@pytest.mark.parametrize(("address", "kinds"), [
    ("10.20.30.40", {"Service", "EndpointSlice"}),
    ("prometheus.monitoring.example.com", {"Service"}),
])
def test_host_mode_points_the_cluster_at_the_outside_prometheus(tmp_path: Path, playbook_runner: Any, address: str,
                                                                kinds: set[str]) -> None:
    manifest = tmp_path / "objects.yml"
    inventory = write_inventory(tmp_path, {"k8s_kubeconfig": "/nonexistent", "k8s_context": "none"}, {
        "sapphire_namespace": "trading-system", "monitoring_mode": "host", "monitoring_manifest_file": str(manifest),
        "monitoring_external_prometheus_host": address})
    result = playbook_runner(PLAYBOOK, inventory)
    assert result.rc == 0, result.explain()
    objects = yaml.safe_load(manifest.read_text())["items"]
    assert {obj["kind"] for obj in objects} == kinds
    service = by_kind(objects, "Service")["prometheus"]
    assert service["spec"]["ports"][0]["port"] == 9090
    assert "selector" not in service["spec"], "a selector would make Kubernetes manage the endpoints"
    if "EndpointSlice" in kinds:
        endpoints = by_kind(objects, "EndpointSlice")["prometheus-external"]
        assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "prometheus"
        assert endpoints["endpoints"][0]["addresses"] == [address]
    else:
        assert service["spec"]["externalName"] == address


def test_a_loopback_outside_prometheus_is_refused(tmp_path: Path, playbook_runner: Any) -> None:
    inventory = write_inventory(tmp_path, {"k8s_kubeconfig": "/nonexistent", "k8s_context": "none"}, {
        "sapphire_namespace": "trading-system", "monitoring_mode": "host",
        "monitoring_manifest_file": str(tmp_path / "objects.yml"), "monitoring_external_prometheus_host": "127.0.0.1"})
    result = playbook_runner(PLAYBOOK, inventory)
    assert result.rc != 0
    assert "monitoring_external_prometheus_host" in "\n".join(result.failure_messages())
    assert not (tmp_path / "objects.yml").exists()


@pytest.mark.cluster
def test_the_cluster_admits_every_monitoring_pod_under_restricted(local_clusters: Any, tmp_path: Path,
                                                                  playbook_runner: Any) -> None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = k8s.CoreV1Api(local_clusters.client("local-primary"))
    scheduling = k8s.SchedulingV1Api(local_clusters.client("local-primary"))
    namespace = f"mon-test-{uuid.uuid4().hex[:6]}"
    restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    api.create_namespace({"metadata": {"name": namespace, "labels": restricted}})
    try:
        # the namespace role makes these in the real namespace; here throw-away stand-ins
        for account in ("prometheus", "alertmanager", "grafana"):
            api.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
        api.create_namespaced_secret(namespace, {"metadata": {"name": "grafana-credentials"},
                                                 "stringData": {"admin-user": "admin",
                                                                "admin-password": uuid.uuid4().hex}})
        try:
            scheduling.read_priority_class("sapphire-trading-critical")
            priority = "sapphire-trading-critical"
        except ApiException:
            priority = ""  # the namespace role has not run on this cluster yet
        inventory = write_inventory(tmp_path, {
            "k8s_kubeconfig": str(local_clusters.kubeconfigs["local-primary"]), "k8s_context": "local-primary",
        }, {"sapphire_namespace": namespace, "monitoring_priority_class_name": priority})
        result = playbook_runner(PLAYBOOK, inventory)
        assert result.rc == 0, result.explain()

        def pods() -> list[str]:
            return sorted(pod.metadata.name for pod in api.list_namespaced_pod(namespace).items)

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(pods()) < 4:
            time.sleep(2)
        names = pods()
        refused = [event.message for event in api.list_namespaced_event(namespace).items
                   if event.reason == "FailedCreate"]
        assert refused == [], refused
        assert {"prometheus-0", "alertmanager-0", "alertmanager-1"} <= set(names), names
        assert any(name.startswith("grafana-") for name in names), names

        again = playbook_runner(PLAYBOOK, inventory)
        assert again.rc == 0 and again.changed == 0, f"second apply changed: {again.changed_tasks()}"
    finally:
        api.delete_namespace(namespace)
