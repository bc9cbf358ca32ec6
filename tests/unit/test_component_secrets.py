"""Each component gets only its own Secret: the rendered pods of the coordinator, the agents and PostgreSQL read
the database login of their purpose, and only the PostgreSQL pods (the server, its init Job) read the owner's; the
coordinator and the agents read Redis as its agents' ACL user, never as its administrator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sapphire_testlib import run_playbook
from test_network_policies import placeholder_secrets


def render(tmp_path: Path, role: str, **extra: Any) -> list[dict[str, Any]]:
    target = tmp_path / f"{role}.json"
    result = run_playbook("tests/unit/playbooks/render.yml", "inventories/local", limit="local-primary",
                          extra_vars={"render_file": str(target), "render_role": role,
                                      **placeholder_secrets("inventories/local"), **extra})
    assert result.rc == 0, result.explain()
    return json.loads(target.read_text())["items"]


def secrets_read(container: dict[str, Any]) -> set[str]:
    return {variable["valueFrom"]["secretKeyRef"]["name"] for variable in container.get("env", [])
            if "secretKeyRef" in variable.get("valueFrom", {})}


def pod_spec(item: dict[str, Any]) -> dict[str, Any]:
    return item["spec"]["template"]["spec"]


def test_the_coordinator_and_each_agent_read_only_their_own_database_login(tmp_path: Path) -> None:
    deployments = [item for item in render(tmp_path, "agents") if item["kind"] == "Deployment"]
    assert len(deployments) > 1
    for item in deployments:
        name = item["metadata"]["name"]
        wanted = "postgres-coordinator-credentials" if name == "trading-coordinator" else "postgres-agent-credentials"
        for container in pod_spec(item)["containers"]:
            database_logins = {secret for secret in secrets_read(container) if secret.startswith("postgres-")}
            assert database_logins == {wanted}, name
            assert {secret for secret in secrets_read(container) if secret.startswith("redis-")} == {
                "redis-agent-credentials"}, name


def test_the_database_owner_s_login_stays_with_the_postgres_pods(tmp_path: Path) -> None:
    items = in_cluster_postgres(tmp_path)
    containers = {container["name"]: container for item in items if item["kind"] in ("StatefulSet", "Job")
                  for container in pod_spec(item)["containers"]}
    # The server bootstraps with the administrative login; of the owner's Secret it reads the database name only.
    assert secrets_read(containers["postgres"]) == {"postgres-admin-credentials", "postgres-credentials"}
    server_env = containers["postgres"]["env"]
    assert {(variable["name"], variable["valueFrom"]["secretKeyRef"]["key"]) for variable in server_env
            if variable.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "postgres-credentials"} == {
        ("POSTGRES_DB", "database")}
    assert secrets_read(containers["postgres-exporter"]) == {"postgres-monitor-credentials"}
    # The init Job makes the owner and converges every login, so it reads each one's password, as the administrator.
    init = containers["schema"]
    assert secrets_read(init) == {"postgres-admin-credentials", "postgres-credentials", "postgres-agent-credentials",
                                  "postgres-coordinator-credentials", "postgres-monitor-credentials"}
    assert {variable["valueFrom"]["secretKeyRef"]["key"] for variable in init["env"]
            if variable["valueFrom"]["secretKeyRef"]["name"] not in ("postgres-credentials",
                                                                     "postgres-admin-credentials")} == {"password"}
    command = " ".join(init["command"])
    assert command.index("owner.sql") < command.index("schema.sql") < command.index("identities.sql")
    (config,) = [item for item in items if item["kind"] == "ConfigMap"
                 and item["metadata"]["name"].startswith("postgres-init-")]
    assert "render-only" not in json.dumps(config)  # no password in the ConfigMap
    assert '\\getenv sapphire_password POSTGRES_AGENT_PASSWORD' in config["data"]["identities.sql"]


def test_every_login_has_its_secret_in_the_namespace(tmp_path: Path) -> None:
    target = tmp_path / "secrets.json"
    render(tmp_path, "namespace", namespace_secrets_manifest_file=str(target))
    secrets = {item["metadata"]["name"]: set(item["data"]) for item in json.loads(target.read_text())["items"]}
    for name in ("postgres-credentials", "postgres-agent-credentials", "postgres-coordinator-credentials",
                 "postgres-monitor-credentials"):
        assert secrets[name] == {"username", "password", "database"}, name
    assert secrets["redis-credentials"] == {"password"}
    for name in ("redis-agent-credentials", "redis-replication-credentials", "redis-monitor-credentials"):
        assert secrets[name] == {"username", "password"}, name


def test_the_pods_dial_and_verify_the_data_services_as_the_postgres_and_redis_roles_publish(tmp_path: Path) -> None:
    """Where the coordinator and the agents dial PostgreSQL and Redis, and the TLS they use, come from the ConfigMaps
    postgres-client and redis-client (no host or port of their own), the CAs those name mounted from the same."""
    deployments = [item for item in render(tmp_path, "agents") if item["kind"] == "Deployment"]
    assert {item["metadata"]["name"] for item in deployments} >= {"trading-coordinator", "agent-momentum"}
    for item in deployments:
        name, spec = item["metadata"]["name"], pod_spec(item)
        (container,) = spec["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "postgres-client"}},
                                        {"configMapRef": {"name": "redis-client"}}], name
        assert not {variable["name"] for variable in container["env"]} & {
            "POSTGRES_HOST", "POSTGRES_PORT", "REDIS_HOST", "REDIS_PORT", "PGSSLMODE", "REDIS_TLS"}, name
        assert {"name": "data-ca", "mountPath": "/etc/sapphire/tls", "readOnly": True} in container["volumeMounts"]
        (volume,) = [volume for volume in spec["volumes"] if volume["name"] == "data-ca"]
        assert [(source["configMap"]["name"], source["configMap"]["items"]) for source in volume["projected"]["sources"]
                ] == [("postgres-client", [{"key": "ca.crt", "path": "postgres/ca.crt"}]),
                      ("redis-client", [{"key": "ca.crt", "path": "redis/ca.crt"}])], name


def in_cluster_postgres(tmp_path: Path, **extra: Any) -> list[dict[str, Any]]:
    """The in-cluster PostgreSQL's objects, the platform CA a file of this test."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n")
    return render(tmp_path, "postgres", postgres_mode="kubernetes", postgres_tls_ca_file=str(ca), **extra)


def test_in_cluster_postgres_publishes_its_service_for_the_pods_to_verify(tmp_path: Path) -> None:
    items = in_cluster_postgres(tmp_path)
    (client,) = [item for item in items
                 if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "postgres-client"]
    assert client["data"] == {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                              "PGSSLROOTCERT": "/etc/sapphire/tls/postgres/ca.crt",
                              "ca.crt": (tmp_path / "ca.crt").read_text()}
    # The init Job dials the Service the same way.
    (job,) = [item for item in items if item["kind"] == "Job"]
    (container,) = pod_spec(job)["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "postgres-client"}}]
    without = in_cluster_postgres(tmp_path, postgres_tls=False)
    (client,) = [item for item in without
                 if item["kind"] == "ConfigMap" and item["metadata"]["name"] == "postgres-client"]
    assert client["data"] == {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "prefer"}
