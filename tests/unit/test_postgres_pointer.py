"""postgres role: the Service that points the cluster at a PostgreSQL outside it (host/external modes).

Rendered with plain Jinja2 and the repository's filters (no Ansible run): an IP gets a
selector-less Service plus an EndpointSlice, a DNS name an ExternalName Service, and a
loopback address (which the API server refuses as an endpoint) a Service without endpoints.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "roles" / "postgres" / "templates" / "k8s" / "pointer.yml.j2"


def render(host: str, port: int = 5432) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("sapphire_filters", REPO_ROOT / "filter_plugins" / "sapphire.py")
    assert spec and spec.loader
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(enabled_extensions=(), default_for_string=False))
    env.filters.update(filters.FilterModule().filters())
    env.filters["to_json"] = json.dumps
    env.filters["combine"] = lambda left, right: {**left, **right}
    is_ip = all(part.isdigit() for part in host.split(".")) or ":" in host
    pointer = {"host": host, "port": port, "is_ip": is_ip, "is_loopback": host.startswith("127.") or host == "::1"}
    text = env.from_string(TEMPLATE.read_text()).render(
        __postgres_pointer=pointer, sapphire_namespace="trading-system", sapphire_release="2026.11.0")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_ip_gets_selectorless_service_and_endpointslice() -> None:
    service, endpoints = render("10.20.30.40", 6432)
    assert service["kind"] == "Service" and "selector" not in service["spec"]
    assert service["spec"]["ports"] == [{"name": "postgres", "port": 5432, "targetPort": 6432, "protocol": "TCP"}]
    assert endpoints["kind"] == "EndpointSlice"
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "postgres"
    assert endpoints["endpoints"][0]["addresses"] == ["10.20.30.40"]
    assert endpoints["ports"] == [{"name": "postgres", "port": 6432, "protocol": "TCP"}]


def test_dns_name_gets_externalname_service() -> None:
    (service,) = render("sapphire.abc123.eu-west-1.rds.amazonaws.com")
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == "sapphire.abc123.eu-west-1.rds.amazonaws.com"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_gets_no_endpoint_the_api_server_would_refuse(host: str) -> None:
    docs = render(host, 15432)
    assert [doc["kind"] for doc in docs] == ["Service"]
    assert docs[0]["metadata"]["annotations"]["sapphire.io/postgres-endpoint"] == f"{host}:15432"


def test_every_object_carries_the_platform_labels() -> None:
    for doc in render("10.20.30.40"):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "sapphire"
        assert labels["app.kubernetes.io/managed-by"] == "sapphire-ops"
        assert labels["app.kubernetes.io/component"] == "postgres"
