"""postgres role, Kubernetes mode: what the role renders, and what the API server admits.

The rendering tests need no cluster. The apply test runs when the local clusters exist
(`.local/clusters/*/kubeconfig`): it applies into a throw-away namespace labelled Pod
Security `restricted`, with the Secret, ServiceAccount and PriorityClass the namespace
role would provide, and checks the pod is admitted and the PVC binds.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = f"render-{uuid.uuid4().hex}"
REPLICATION_PASSWORD = f"replica-{uuid.uuid4().hex}"
LOGIN_PASSWORDS = {f"postgres_{login}_password": f"{login}-{uuid.uuid4().hex}"
                   for login in ("agent", "coordinator", "monitor")}
TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]


def render(run_playbook: Callable[..., Any], tmp_path: Path, **extra: Any) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "objects.json"
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the postgres objects", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "Render", "ansible.builtin.include_role": {"name": "postgres", "tasks_from": "render"}},
            {"name": "Save", "ansible.builtin.copy": {"content": "{{ __postgres_objects | to_json }}",
                                                     "dest": str(out), "mode": "0600"}},
        ]}]))
    variables = {"sapphire_namespace": "trading-system", "sapphire_release": "2026.11.0",
                 "postgres_password": PASSWORD, "postgres_replication_password": REPLICATION_PASSWORD,
                 **LOGIN_PASSWORDS,
                 "ansible_connection": "local", "ansible_python_interpreter": sys.executable, **extra}
    result = run_playbook(str(playbook), "localhost,", extra_vars=variables)
    assert result.rc == 0, result.explain()
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory, playbook_runner: Callable[..., Any]) -> list[dict[str, Any]]:
    return render(playbook_runner, tmp_path_factory.mktemp("pg-render"))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("StatefulSet", "Job")]


def test_renders_statefulset_service_init_job_and_sql(objects: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    names = dict(kinds)
    assert names["StatefulSet"] == "postgres"
    assert ("Service", "postgres") in kinds
    job = by_kind(objects, "Job")[0]
    config = by_kind(objects, "ConfigMap")[0]
    assert job["metadata"]["name"] == config["metadata"]["name"]
    assert job["metadata"]["name"].startswith("postgres-init-")
    sql = config["data"]["schema.sql"]
    for table in TABLES:
        assert f"CREATE TABLE IF NOT EXISTS {table}" in sql
        assert f"create_hypertable('{table}', 'timestamp'" in sql
        assert f"{table}_symbol_timestamp_idx ON {table} (symbol, timestamp DESC)" in sql
    assert "PARTITION BY" not in sql
    # Retention is off by default: data is never deleted unless told.
    assert "add_retention_policy" not in sql
    for obj in objects:
        assert obj["metadata"]["namespace"] == "trading-system"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "sapphire"
        assert labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
        assert labels["app.kubernetes.io/component"] == "postgres"


def test_init_job_name_is_stable_and_follows_the_schema(tmp_path: Path, objects: list[dict[str, Any]],
                                                       playbook_runner: Callable[..., Any]) -> None:
    job = by_kind(objects, "Job")[0]["metadata"]["name"]
    assert by_kind(render(playbook_runner, tmp_path / "same"), "Job")[0]["metadata"]["name"] == job
    enforced = render(playbook_runner, tmp_path / "enforced", postgres_retention_enforce=True)
    assert by_kind(enforced, "Job")[0]["metadata"]["name"] != job
    enforced_sql = by_kind(enforced, "ConfigMap")[0]["data"]["schema.sql"]
    assert "add_retention_policy('trades', INTERVAL '90 days'" in enforced_sql


def test_statefulset_carries_seed_sizes_and_platform_contract(objects: list[dict[str, Any]]) -> None:
    sts = by_kind(objects, "StatefulSet")[0]
    spec = sts["spec"]["template"]["spec"]
    postgres = next(c for c in spec["containers"] if c["name"] == "postgres")
    args = postgres["args"]
    settings = dict(args[i + 1].split("=", 1) for i in range(0, len(args), 2) if args[i] == "-c")
    assert settings["max_connections"] == "200"
    assert settings["shared_buffers"] == "1GB"
    assert settings["effective_cache_size"] == "3GB"
    assert settings["work_mem"] == "5MB"
    assert settings["maintenance_work_mem"] == "256MB"
    assert "timescaledb" in settings["shared_preload_libraries"]
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert spec["priorityClassName"] == "sapphire-trading-critical"
    assert spec["serviceAccountName"] == "postgres"
    assert spec["automountServiceAccountToken"] is False
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9187"
    exporter = next(c for c in spec["containers"] if c["name"] == "postgres-exporter")
    assert {"name": "metrics", "containerPort": 9187, "protocol": "TCP"} in exporter["ports"]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "postgres")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"postgres": 5432, "metrics": 9187}
    env = {e["name"]: e for e in postgres["env"]}
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-credentials", "key": "password"}


def test_every_pod_meets_pod_security_restricted(objects: list[dict[str, Any]]) -> None:
    for spec in pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 70
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts_by_volume = {v["name"] for v in spec.get("volumes", [])}
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["readOnlyRootFilesystem"] is True
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"}
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounts_by_volume | {"data"}
        if spec.get("restartPolicy") is None:  # the StatefulSet: writable socket dir on an emptyDir
            postgres = next(c for c in spec["containers"] if c["name"] == "postgres")
            mounts = {m["mountPath"]: m["name"] for m in postgres["volumeMounts"]}
            assert mounts["/var/run/postgresql"] == "run"
            assert postgres["readinessProbe"] and postgres["livenessProbe"]


def test_no_password_in_rendered_objects(objects: list[dict[str, Any]]) -> None:
    text = json.dumps(objects)
    assert PASSWORD not in text and REPLICATION_PASSWORD not in text
    for config in by_kind(objects, "ConfigMap"):
        # The logins' SQL names their password variables; a password itself would be a quoted literal after PASSWORD.
        assert not re.search(r"password\s+'", json.dumps(config["data"]), re.IGNORECASE)
        assert "PASSWORD :'sapphire_password'" in json.dumps(config["data"])


def test_image_tag_latest_is_rejected(tmp_path: Path, playbook_runner: Callable[..., Any]) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"clusters": {"hosts": {"c1": {}}}}}}))
    playbook = tmp_path / "deploy.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Deploy", "hosts": "clusters", "gather_facts": False,
                                         "roles": [{"role": "postgres"}]}]))
    result = playbook_runner(str(playbook), inventory, extra_vars={
        "postgres_password": PASSWORD, "postgres_replication_password": REPLICATION_PASSWORD, **LOGIN_PASSWORDS,
        "postgres_image": "timescale/timescaledb:latest", "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable, "k8s_kubeconfig": "/nonexistent", "k8s_context": "none",
        "sapphire_namespace": "trading-system", "sapphire_release": "2026.11.0"})
    assert result.rc != 0
    assert "postgres_image" in "\n".join(result.failure_messages())


# --- against the local cluster -------------------------------------------------------------



@pytest.fixture
def scratch_namespace(local_clusters: Any) -> Iterator[tuple[Any, str]]:
    """A namespace labelled Pod Security restricted with what the namespace role would provide."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = local_clusters.client("local-primary")
    core, scheduling = client.CoreV1Api(api), client.SchedulingV1Api(api)
    namespace = f"pg-test-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "postgres"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "postgres-credentials"}, "stringData": {
        "username": "sapphire", "password": PASSWORD, "database": "sapphire"}})
    created_priority = False
    try:
        scheduling.read_priority_class("sapphire-trading-critical")
    except ApiException:
        scheduling.create_priority_class({"metadata": {"name": "sapphire-trading-critical"}, "value": 1000000})
        created_priority = True
    try:
        yield api, namespace
    finally:
        core.delete_namespace(namespace)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and core.list_namespaced_persistent_volume_claim(namespace).items:
            time.sleep(2)
        # The volume this test bound goes back to the pool by itself: the local clusters' volume
        # provisioner recycles a volume whose claim is gone (roles/cluster, issue 20).
        if created_priority:
            scheduling.delete_priority_class("sapphire-trading-critical")


@pytest.mark.cluster
@pytest.mark.slow
def test_apply_is_admitted_and_the_pvc_binds(tmp_path: Path, scratch_namespace: tuple[Any, str],
                                             playbook_runner: Callable[..., Any]) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api, namespace = scratch_namespace
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    kubeconfig = REPO_ROOT / ".local" / "clusters" / "local-primary" / "kubeconfig"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"clusters": {"hosts": {"local-primary": {
        "k8s_kubeconfig": str(kubeconfig), "k8s_context": "local-primary"}}}}}}))
    playbook = tmp_path / "deploy.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Deploy postgres", "hosts": "clusters", "gather_facts": False,
                                         "roles": [{"role": "postgres"}]}]))
    variables = {"postgres_password": PASSWORD, "postgres_replication_password": REPLICATION_PASSWORD,
                 **LOGIN_PASSWORDS,
                 "postgres_mode": "kubernetes", "sapphire_namespace": namespace, "sapphire_release": "2026.11.0",
                 "ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    first = playbook_runner(str(playbook), inventory, extra_vars=variables)
    assert first.rc == 0, first.explain()
    assert PASSWORD not in first.stdout + first.stderr

    deadline = time.monotonic() + 180
    pod = None
    pvc_phase = ""
    while time.monotonic() < deadline:
        try:
            pod = core.read_namespaced_pod("postgres-0", namespace)
            pvc_phase = core.read_namespaced_persistent_volume_claim("data-postgres-0", namespace).status.phase
        except ApiException:
            pod = None
        if pod is not None and pvc_phase == "Bound" and pod.status.phase == "Running":
            break
        time.sleep(3)
    events = "\n".join(f"{e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
                       for e in core.list_namespaced_event(namespace).items)
    assert pod is not None, f"postgres-0 was not admitted:\n{events}"
    assert pvc_phase == "Bound", f"PVC data-postgres-0 is {pvc_phase!r}:\n{events}"
    assert pod.spec.security_context.run_as_user == 70
    assert pod.spec.priority_class_name == "sapphire-trading-critical"
    jobs = batch.list_namespaced_job(namespace).items
    assert [j.metadata.name for j in jobs if j.metadata.name.startswith("postgres-init-")], "no init Job"
    job_pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=postgres-init").items
    assert job_pods, f"the init Job's pod was not admitted:\n{events}"

    second = playbook_runner(str(playbook), inventory, extra_vars=variables)
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()
