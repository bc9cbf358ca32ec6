"""postgres role, Kubernetes mode: what the role renders, and what the API server admits.

The rendering tests need no cluster. The apply test runs when the local clusters exist
(`.local/clusters/*/kubeconfig`): it applies into a throw-away namespace labelled Pod
Security `restricted`, with the Secret, ServiceAccount and PriorityClass the namespace
role would provide, and checks the pod is admitted and the PVC binds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
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
ADMIN_PASSWORD = f"admin-{uuid.uuid4().hex}"
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
                 **LOGIN_PASSWORDS, "sapphire_local_dir": str(tmp_path / "local"),  # the platform CA of this test
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
    # The server bootstraps with the administrative login, not the owner's (which the init Job makes, no superuser).
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-admin-credentials",
                                                                     "key": "password"}


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
    (init,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("postgres-init-")]
    assert "PASSWORD :'sapphire_password'" in json.dumps(init["data"])


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


def deploy_in_cluster(tmp_path: Path, namespace: str, playbook_runner: Callable[..., Any]) -> tuple[Any, Any]:
    """The postgres role in kubernetes mode into `namespace` of local-primary (its CA under tmp_path): the result and
    a function that runs it again."""
    kubeconfig = REPO_ROOT / ".local" / "clusters" / "local-primary" / "kubeconfig"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"clusters": {"hosts": {"local-primary": {
        "k8s_kubeconfig": str(kubeconfig), "k8s_context": "local-primary"}}}}}}))
    playbook = tmp_path / "deploy.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Deploy postgres", "hosts": "clusters", "gather_facts": False,
                                         "roles": [{"role": "postgres"}]}]))
    variables = {"postgres_password": PASSWORD, "postgres_replication_password": REPLICATION_PASSWORD,
                 **LOGIN_PASSWORDS, "sapphire_local_dir": str(tmp_path / "local"),
                 "postgres_admin_password": ADMIN_PASSWORD, "postgres_mode": "kubernetes",
                 "sapphire_namespace": namespace, "sapphire_release": "2026.11.0",
                 "ansible_connection": "local", "ansible_python_interpreter": sys.executable}

    def run() -> Any:
        return playbook_runner(str(playbook), inventory, extra_vars=variables)

    return run(), run


@pytest.mark.cluster
@pytest.mark.slow
def test_apply_is_admitted_and_the_pvc_binds(tmp_path: Path, scratch_namespace: tuple[Any, str],
                                             playbook_runner: Callable[..., Any]) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api, namespace = scratch_namespace
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    first, deploy_again = deploy_in_cluster(tmp_path, namespace, playbook_runner)
    assert first.rc == 0, first.explain()
    assert PASSWORD not in first.stdout + first.stderr and ADMIN_PASSWORD not in first.stdout + first.stderr
    admin = core.read_namespaced_secret("postgres-admin-credentials", namespace)
    assert base64.b64decode(admin.data["username"]) == b"postgres"

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

    second = deploy_again()
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()


def own_network_address() -> str:
    """This machine's IPv4 address outside loopback (where a connection to itself comes from too); skips without one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source address
        except OSError:
            pytest.skip("no network address outside loopback")
        address = sock.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("no network address outside loopback")
    return address


@pytest.mark.cluster
@pytest.mark.slow
def test_the_server_the_statefulset_describes_is_verified_by_the_service_name_and_refuses_plaintext_from_the_network(
        tmp_path: Path, scratch_namespace: tuple[Any, str], playbook_runner: Callable[..., Any]) -> None:
    """kwok runs no pod: the StatefulSet's settings, the ConfigMap postgres-hba and the Secret postgres-tls the role
    applied are run here with the distribution's PostgreSQL (the key root-owned and group-readable, as the kubelet
    mounts it with the pod's fsGroup), and a client set up from the ConfigMap postgres-client connects as a pod does."""
    import psycopg
    from conftest import PG_BIN, as_postgres, free_port, require_binary, traversable_tmp
    from kubernetes import client

    require_binary(PG_BIN / "initdb")
    api, namespace = scratch_namespace
    first, _ = deploy_in_cluster(tmp_path, namespace, playbook_runner)
    assert first.rc == 0, first.explain()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    secret = core.read_namespaced_secret("postgres-tls", namespace)
    assert secret.type == "kubernetes.io/tls"
    hba = core.read_namespaced_config_map("postgres-hba", namespace).data["pg_hba.conf"]
    pod_client = core.read_namespaced_config_map("postgres-client", namespace).data
    (container,) = [c for c in apps.read_namespaced_stateful_set("postgres", namespace).spec.template.spec.containers
                    if c.name == "postgres"]
    settings = dict(arg.split("=", 1) for arg in container.args if arg != "-c")
    assert settings["ssl"] == "on" and settings["hba_file"] == "/etc/postgres/hba/pg_hba.conf"

    network = own_network_address()  # the pod's network side: not loopback, so pg_hba's network lines decide
    root = traversable_tmp()
    port = free_port()
    try:
        mounted = root / "etc-postgres"  # /etc/postgres of the pod
        (mounted / "tls").mkdir(parents=True)
        (mounted / "hba").mkdir()
        for key in ("tls.crt", "tls.key"):
            path = mounted / "tls" / key
            path.write_bytes(base64.b64decode(secret.data[key]))
            if os.geteuid() == 0:
                shutil.chown(path, "root", "postgres")
            path.chmod(0o440)
        (mounted / "hba" / "pg_hba.conf").write_text(hba)
        for directory in (mounted, mounted / "tls", mounted / "hba"):
            directory.chmod(0o755)
        data = root / "data"
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "sapphire", "--auth-local=trust", "-E", "UTF8",
                    "--locale=C.UTF-8")
        options = [f"-c {key}={value.replace('/etc/postgres', str(mounted))}" for key, value in settings.items()
                   if key.startswith("ssl") or key in ("hba_file", "password_encryption")]
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60",
                    "-o", " ".join([f"-p {port}", f"-k {root}", f"-c listen_addresses=127.0.0.1,{network}", *options]),
                    "start")
        as_postgres(str(PG_BIN / "psql"), "-h", str(root), "-p", str(port), "-U", "sapphire", "-d", "postgres", "-c",
                    f"ALTER ROLE sapphire PASSWORD '{PASSWORD}'")
        ca = root / "ca.crt"
        ca.write_text(pod_client["ca.crt"])
        login = {"hostaddr": network, "port": port, "user": "sapphire", "password": PASSWORD,
                 "dbname": "postgres", "connect_timeout": 10}
        # A pod dials the Service (or pod 0 by its headless name) and verifies it against the CA it was given.
        for name in (pod_client["POSTGRES_HOST"], f"postgres.{namespace}.svc",
                     f"postgres-0.postgres-headless.{namespace}.svc"):
            with psycopg.connect(host=name, sslmode=pod_client["PGSSLMODE"], sslrootcert=str(ca), **login) as conn:
                assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError, match="no encryption"):
            psycopg.connect(host="postgres", sslmode="disable", **login)
        # The exporter sidecar and the probes stay on the pod's loopback.
        with psycopg.connect(host="127.0.0.1", port=port, user="sapphire", password=PASSWORD, dbname="postgres",
                             sslmode="disable", connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.servers
def test_the_init_job_makes_the_owner_a_login_without_superuser_that_owns_the_database_and_schema(
        objects: list[dict[str, Any]]) -> None:
    """The init Job's files run as it runs them, here on the distribution's PostgreSQL bootstrapped as the image does
    (the administrative login postgres owning the database): owner.sql, the schema as the owner (SET ROLE; the
    host-mode schema stands in for TimescaleDB's, which Debian does not ship), identities.sql; twice, as a Job that
    runs again would. The owner is no superuser and owns the database and the tables; the agents' login writes."""
    from conftest import PG_BIN, SCHEMA, as_postgres, free_port, require_binary, traversable_tmp

    require_binary(PG_BIN / "initdb")
    (init,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("postgres-init-")]
    root = traversable_tmp()
    port = free_port()
    files = {name: root / name for name in ("owner.sql", "identities.sql")}
    for name, path in files.items():
        path.write_text(init["data"][name])
    (root / "schema.sql").write_text(SCHEMA.read_text())
    env = {**os.environ, "POSTGRES_OWNER": "sapphire", "POSTGRES_OWNER_PASSWORD": PASSWORD,
           **{name.upper(): value for name, value in LOGIN_PASSWORDS.items()}}

    def psql(*arguments: str, user: str = "postgres") -> Any:
        return as_postgres(str(PG_BIN / "psql"), "-h", str(root), "-p", str(port), "-U", user, "-d", "sapphire",
                           "-v", "ON_ERROR_STOP=1", "-Atq", *arguments, env=env, check=False)

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth-local=trust",
                    "-E", "UTF8", "--locale=C.UTF-8")
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "postgres.log"), "-w",
                    "-t", "60", "-o", f"-p {port} -k {root} -c listen_addresses=''", "start")
        as_postgres(str(PG_BIN / "createdb"), "-h", str(root), "-p", str(port), "-U", "postgres", "sapphire")
        for _ in range(2):
            for step in (["-f", str(files["owner.sql"])],
                         ["-c", 'SET ROLE "sapphire"', "-f", str(root / "schema.sql")],
                         ["-f", str(files["identities.sql"])]):
                done = psql(*step)
                assert done.returncode == 0, f"{step}: {done.stderr}"
        owner = psql("-c", "SELECT rolsuper, rolcreaterole, rolcreatedb, pg_get_userbyid(d.datdba), "
                           "(SELECT tableowner FROM pg_tables WHERE tablename = 'trades') "
                           "FROM pg_roles r, pg_database d WHERE r.rolname = 'sapphire' AND d.datname = 'sapphire'")
        assert owner.stdout.strip() == "f|f|f|sapphire|sapphire", owner.stderr
        written = psql("-c", "INSERT INTO trades (timestamp, agent_id, symbol, side, quantity, price) "
                             "VALUES (now(), 'momentum', 'BTC/USDT', 'buy', 1, 1) RETURNING agent_id",
                       user="sapphire_agent")
        assert written.stdout.strip() == "momentum", written.stderr
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
