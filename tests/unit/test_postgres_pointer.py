"""postgres role: the Service that points the cluster at a PostgreSQL outside it (host/external modes).

Rendered with plain Jinja2 and the repository's filters (no Ansible run): an IP gets a
selector-less Service plus an EndpointSlice, a DNS name an ExternalName Service, and a
loopback address (which the API server refuses as an endpoint) a Service without endpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "roles" / "postgres" / "templates" / "k8s" / "pointer.yml.j2"


tls = load_module("tls", "filter_plugins")


def render(host: str, port: int = 5432, mode: str = "host", client_tls: dict[str, str] | None = None,
           ca_text: str = "-----BEGIN CERTIFICATE-----\n") -> list[dict[str, Any]]:
    """The pointer's objects; the Service (and EndpointSlice) first, the ConfigMap postgres-client last."""
    filters = load_module("sapphire", "filter_plugins")
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(enabled_extensions=(), default_for_string=False))
    env.filters.update(filters.FilterModule().filters())
    env.filters["to_json"] = json.dumps
    env.filters["combine"] = lambda left, right: {**left, **right}
    is_ip = all(part.isdigit() for part in host.split(".")) or ":" in host
    pointer = {"host": host, "port": port, "is_ip": is_ip, "is_loopback": host.startswith("127.") or host == "::1"}
    client = tls.pod_data_client("postgres", mode, client_tls or {"sslmode": "verify-full", "sslrootcert": "/ca.crt"},
                                 pointer)
    data = {**client["data"], **({"ca.crt": ca_text} if client["ca_file"] else {})}
    text = env.from_string(TEMPLATE.read_text()).render(
        __postgres_pointer=pointer, sapphire_namespace="trading-system", sapphire_release="2026.11.0",
        __postgres_pod_client_data=data)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pointer_objects(host: str, port: int = 5432) -> list[dict[str, Any]]:
    """The Service and EndpointSlice the pointer renders (the ConfigMap aside)."""
    return [doc for doc in render(host, port) if doc["kind"] != "ConfigMap"]


def test_ip_gets_selectorless_service_and_endpointslice() -> None:
    service, endpoints = pointer_objects("10.20.30.40", 6432)
    assert service["kind"] == "Service" and "selector" not in service["spec"]
    assert service["spec"]["ports"] == [{"name": "postgres", "port": 5432, "targetPort": 6432, "protocol": "TCP"}]
    assert endpoints["kind"] == "EndpointSlice"
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "postgres"
    assert endpoints["endpoints"][0]["addresses"] == ["10.20.30.40"]
    assert endpoints["ports"] == [{"name": "postgres", "port": 6432, "protocol": "TCP"}]


def test_dns_name_gets_externalname_service() -> None:
    (service,) = pointer_objects("sapphire.abc123.eu-west-1.rds.amazonaws.com")
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == "sapphire.abc123.eu-west-1.rds.amazonaws.com"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_gets_no_endpoint_the_api_server_would_refuse(host: str) -> None:
    docs = pointer_objects(host, 15432)
    assert [doc["kind"] for doc in docs] == ["Service"]
    assert docs[0]["metadata"]["annotations"]["sapphire.io/postgres-endpoint"] == f"{host}:15432"


def test_every_object_carries_the_platform_labels() -> None:
    for doc in render("10.20.30.40"):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "sapphire"
        assert labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
        assert labels["app.kubernetes.io/component"] == "postgres"


def test_the_pods_of_a_host_mode_server_get_its_service_name_and_the_platform_ca() -> None:
    (client,) = [doc for doc in render("10.20.30.40", 15432) if doc["kind"] == "ConfigMap"]
    assert client["metadata"]["name"] == "postgres-client"
    assert client["data"] == {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                              "PGSSLROOTCERT": "/etc/sapphire/tls/postgres/ca.crt",
                              "ca.crt": "-----BEGIN CERTIFICATE-----\n"}


def test_the_pods_of_a_managed_server_verified_by_name_dial_its_endpoint_with_their_trust_store() -> None:
    host = "sapphire.abc123.eu-west-1.rds.amazonaws.com"
    (client,) = [doc for doc in render(host, 5432, "external", {"sslmode": "verify-full", "sslrootcert": "system"})
                 if doc["kind"] == "ConfigMap"]
    assert client["data"] == {"POSTGRES_HOST": host, "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                              "PGSSLROOTCERT": "system"}
