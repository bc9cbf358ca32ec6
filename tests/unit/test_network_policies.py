"""The platform's NetworkPolicies, proved with the evaluator of filter_plugins/netpol.py (kwok runs no network
plugin): the namespace role renders them for a cluster of an inventory, and each connection between the platform's
components, the cluster DNS, another namespace and addresses outside the cluster is allowed or denied as intended."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import load_module
from sapphire_testlib import REPO_ROOT, run_playbook

netpol = load_module("netpol", "filter_plugins")

PLAYBOOK = "tests/unit/playbooks/render.yml"
NS = "trading-system"
NAMESPACES = {name: {"kubernetes.io/metadata.name": name} for name in (NS, "kube-system", "ops", "elsewhere")}


def placeholder_secrets(inventory: str) -> dict[str, str]:
    """The inventory's vault_* references set to a placeholder: the render checks them, the policies use none."""
    text = (REPO_ROOT / inventory / "group_vars" / "all" / "main.yml").read_text()
    return {name: "render-only" for name in set(re.findall(r"\bvault_\w+", text))}


def render(tmp_path: Path, inventory: str, host: str, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    target = tmp_path / f"{host}.json"
    variables = {"render_file": str(target), "render_role": "namespace", "sapphire_namespace": NS,
                 **placeholder_secrets(inventory)}
    result = run_playbook(PLAYBOOK, inventory, extra_vars={**variables, **(extra or {})}, limit=host)
    assert result.rc == 0, result.explain()
    return json.loads(target.read_text())["items"]


def component(name: str, namespace: str = NS) -> dict[str, Any]:
    return {"namespace": namespace, "labels": {"app.kubernetes.io/component": name}}


def address(ip: str) -> dict[str, Any]:
    return {"ip": ip}


DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
COORDINATOR, AGENT = component("coordinator"), component("agent")
REDIS, POSTGRES = component("redis"), component("postgres")
PROMETHEUS, ALERTMANAGER, GRAFANA = component("prometheus"), component("alertmanager"), component("grafana")
INTERNET = address("8.8.8.8")

# (source, destination, port, protocol, allowed) that hold whatever the inventory declares.
INSIDE = [
    ("agent -> redis", AGENT, REDIS, 6379, "TCP", True),
    ("coordinator -> postgres", COORDINATOR, POSTGRES, 5432, "TCP", True),
    ("agent -> postgres on the Redis port", AGENT, POSTGRES, 6379, "TCP", False),
    ("redis replica -> redis primary", REDIS, REDIS, 6379, "TCP", True),
    ("postgres standby -> primary", POSTGRES, POSTGRES, 5432, "TCP", True),
    ("agent -> cluster DNS (UDP)", AGENT, DNS, 53, "UDP", True),
    ("redis -> cluster DNS (TCP)", REDIS, DNS, 53, "TCP", True),
    ("agent -> DNS of another namespace", AGENT, component("dns", "elsewhere"), 53, "UDP", False),
    ("prometheus scrapes an agent", PROMETHEUS, AGENT, 9100, "TCP", True),
    ("prometheus scrapes redis' exporter", PROMETHEUS, REDIS, 9121, "TCP", True),
    ("prometheus -> alertmanager", PROMETHEUS, ALERTMANAGER, 9093, "TCP", True),
    ("grafana -> prometheus", GRAFANA, PROMETHEUS, 9090, "TCP", True),
    ("grafana -> alertmanager", GRAFANA, ALERTMANAGER, 9093, "TCP", True),
    ("agent -> coordinator", AGENT, COORDINATOR, 8000, "TCP", False),
    ("agent -> agent", AGENT, AGENT, 8080, "TCP", False),
    ("agent -> prometheus", AGENT, PROMETHEUS, 9090, "TCP", False),
    ("redis -> the internet", REDIS, INTERNET, 443, "TCP", False),
    ("postgres -> the internet", POSTGRES, INTERNET, 443, "TCP", False),
    ("grafana -> the internet", GRAFANA, INTERNET, 443, "TCP", False),
    ("agent -> the internet on 80", AGENT, INTERNET, 80, "TCP", False),
    ("a pod of another namespace -> redis", component("agent", "elsewhere"), REDIS, 6379, "TCP", False),
    ("a pod of another namespace -> coordinator", component("x", "elsewhere"), COORDINATOR, 8000, "TCP", False),
    ("the internet -> redis", INTERNET, REDIS, 6379, "TCP", False),
]


def verdicts(objects: list[dict[str, Any]], cases: list[tuple[Any, ...]]) -> dict[str, bool]:
    rows = netpol.matrix(netpol.policies_of(objects), [
        {"name": name, "source": source, "destination": destination, "port": port, "protocol": protocol}
        for name, source, destination, port, protocol, _ in cases], NAMESPACES)
    return {row["name"]: row["allowed"] for row in rows}


def expected(cases: list[tuple[Any, ...]]) -> dict[str, bool]:
    return {case[0]: case[-1] for case in cases}


def test_the_defaults_admit_the_platform_inside_and_nobody_outside(tmp_path: Path) -> None:
    # The local default declares only the host-mode servers' address (loopback) as its external data.
    objects = render(tmp_path, "inventories/local", "local-primary")
    # An empty list of rules is left out: the API server drops it, and the next apply would report a change.
    assert [item["metadata"]["name"] for item in netpol.policies_of(objects)
            if [] in item["spec"].values()] == []
    cases = [*INSIDE,
        ("agent -> host-mode redis", AGENT, address("127.0.0.1"), 6379, "TCP", True),
        ("agent -> the internet on 443 (no exchange declared)", AGENT, INTERNET, 443, "TCP", False),
        ("coordinator -> the internet on 443", COORDINATOR, INTERNET, 443, "TCP", False),
        ("the internet -> coordinator API", INTERNET, COORDINATOR, 8000, "TCP", False),
        ("an office address -> grafana", address("10.1.2.3"), GRAFANA, 3000, "TCP", False),
        ("a pod of ops -> coordinator API", component("console", "ops"), COORDINATOR, 8000, "TCP", False),
        ("prometheus -> an API server", PROMETHEUS, address("10.96.0.1"), 443, "TCP", False),
        ("alertmanager -> telegram", ALERTMANAGER, address("149.154.167.220"), 443, "TCP", False),
        ("agent -> the metadata server", AGENT, address("169.254.169.254"), 80, "TCP", False),
    ]
    assert verdicts(objects, cases) == expected(cases)


def test_declared_sources_and_destinations_are_admitted_and_nothing_else(tmp_path: Path) -> None:
    declared = {"namespace_api_ingress_cidrs": ["198.51.100.0/24"], "namespace_api_ingress_namespaces": ["ops"],
                "namespace_grafana_ingress_cidrs": ["10.1.0.0/16"],
                "namespace_exchange_egress_cidrs": ["203.0.113.0/24", "0.0.0.0/0"],
                "namespace_external_data_cidrs": ["10.20.0.0/24"], "namespace_kube_api_cidrs": ["10.96.0.1/32"],
                "namespace_alert_egress_cidrs": ["149.154.160.0/20"]}
    objects = render(tmp_path, "inventories/local", "local-primary", declared)
    # The API server refuses an except outside its cidr: only 0.0.0.0/0 carries the private networks.
    exchange = next(item for item in objects if item["metadata"]["name"] == "agents-exchange-egress")
    assert exchange["spec"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}]
    cases = [*INSIDE,
        ("the operators' network -> coordinator API", address("198.51.100.7"), COORDINATOR, 8000, "TCP", True),
        ("a pod of ops -> coordinator API", component("console", "ops"), COORDINATOR, 8000, "TCP", True),
        ("the operators' network -> coordinator on another port", address("198.51.100.7"), COORDINATOR, 9000,
         "TCP", False),
        ("the internet -> coordinator API", INTERNET, COORDINATOR, 8000, "TCP", False),
        ("the office -> grafana", address("10.1.2.3"), GRAFANA, 3000, "TCP", True),
        ("the internet -> grafana", INTERNET, GRAFANA, 3000, "TCP", False),
        ("agent -> an exchange", AGENT, address("203.0.113.10"), 443, "TCP", True),
        ("agent -> an exchange on 80", AGENT, address("203.0.113.10"), 80, "TCP", False),
        ("coordinator -> an exchange", COORDINATOR, address("203.0.113.10"), 443, "TCP", True),
        # 0.0.0.0/0 minus the private ranges: a private address stays out of reach.
        ("agent -> a private address on 443", AGENT, address("10.20.0.5"), 443, "TCP", False),
        ("agent -> the managed redis", AGENT, address("10.20.0.5"), 6379, "TCP", True),
        ("coordinator -> the managed postgres", COORDINATOR, address("10.20.0.6"), 5432, "TCP", True),
        ("agent -> the managed redis' network on 22", AGENT, address("10.20.0.5"), 22, "TCP", False),
        ("prometheus -> the API server", PROMETHEUS, address("10.96.0.1"), 6443, "TCP", True),
        ("agent -> the API server", AGENT, address("10.96.0.1"), 443, "TCP", False),
        ("alertmanager -> telegram", ALERTMANAGER, address("149.154.167.220"), 443, "TCP", True),
    ]
    assert verdicts(objects, cases) == expected(cases)


def test_a_region_that_does_not_trade_has_no_route_to_the_exchanges(tmp_path: Path) -> None:
    objects = render(tmp_path, "inventories/local", "local-dr", {"namespace_exchange_egress_cidrs": ["0.0.0.0/0"],
                                                                 "agents_scale_to_zero": True})
    cases = [("agent -> an exchange", AGENT, INTERNET, 443, "TCP", False),
             ("coordinator -> an exchange", COORDINATOR, INTERNET, 443, "TCP", False)]
    assert verdicts(objects, cases) == expected(cases)


@pytest.mark.parametrize("inventory", ["inventories/prod", "inventories/staging"])
def test_the_managed_data_services_of_prod_and_staging_are_reachable(tmp_path: Path, inventory: str) -> None:
    # An external Redis and PostgreSQL are useless if the agents may not reach them (they could not, before the
    # inventories declared the ranges the managed instances answer on).
    host = "gke-us-east1" if inventory.endswith("prod") else "gke-staging-east"
    objects = render(tmp_path, inventory, host)
    data = next(item for item in objects if item["metadata"]["name"] == "traders-to-data")
    cidrs = [peer["ipBlock"]["cidr"] for rule in data["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
    assert cidrs, "no range of the managed data services is declared (namespace_external_data_cidrs)"
    first = cidrs[0].split("/")[0]
    cases = [("agent -> the managed redis", AGENT, address(first), 6379, "TCP", True),
             ("agent -> the managed postgres", AGENT, address(first), 5432, "TCP", True),
             ("the internet -> coordinator API", INTERNET, COORDINATOR, 8000, "TCP", False),
             ("the internet -> grafana", INTERNET, GRAFANA, 3000, "TCP", False)]
    assert verdicts(objects, cases) == expected(cases)
