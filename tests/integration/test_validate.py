"""validate.yml end to end on real servers: a temporary inventory (host mode) pointing at the fixture's
Redis, PostgreSQL primary + standby, Prometheus and the synthetic workload. Asserts the exit code, the
JSON report and the JUnit file, on the healthy platform and with faults; prints how long validate took.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import pytest
import yaml
from conftest import AGENTS, POSTGRES_LOGIN_PASSWORDS, REDIS_USER_PASSWORDS

pytestmark = [pytest.mark.servers, pytest.mark.slow]


@dataclass
class Element:
    """Just enough of an XML tree to read the JUnit file validate.yml writes (our own output)."""

    tag: str
    attrib: dict[str, str]
    children: list[Element] = field(default_factory=list)

    def iter(self, tag: str) -> list[Element]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            found += child.iter(tag)
        return found

    def find(self, tag: str) -> Element | None:
        return next((child for child in self.children if child.tag == tag), None)


def parse_xml(text: str) -> Element:
    stack: list[Element] = [Element("#document", {})]
    parser = expat.ParserCreate()

    def start(tag: str, attrib: dict[str, str]) -> None:
        element = Element(tag, attrib)
        stack[-1].children.append(element)
        stack.append(element)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _tag: stack.pop()
    parser.Parse(text, True)
    return stack[0].children[0]


@pytest.fixture
def run_playbook(playbook_runner: Any) -> Any:
    return playbook_runner


def write_inventory(
    tmp_path: Path, platform: dict[str, Any], cluster: dict[str, Any] | None = None, components: list[str] | None = None
) -> Path:
    """A host-mode inventory of the fixture servers; a cluster host only when `cluster` is given."""
    port = platform["prometheus"].port
    cluster_host = {"sapphire_region": "primary", **(cluster or {})}
    inventory = {
        "all": {
            "children": {
                "clusters": {"children": {"primary": {"hosts": {"it-primary": cluster_host}}}},
                "redis_hosts": {
                    "hosts": {
                        "redis-primary": {
                            "redis_port": platform["redis"].port,
                            "redis_replication_role": "primary",
                            "sapphire_region": "primary",
                        }
                    }
                },
                "postgres_hosts": {
                    "hosts": {
                        "postgres-primary": {
                            "postgres_port": platform["postgres"].port,
                            "postgres_replication_role": "primary",
                            "sapphire_region": "primary",
                        },
                        "postgres-dr": {
                            "postgres_port": platform["standby"].port,
                            "postgres_replication_role": "standby",
                            "postgres_primary_host": "postgres-primary",
                            "sapphire_region": "dr",
                        },
                    }
                },
                "monitoring_hosts": {
                    "hosts": {"monitoring-it": {"prometheus_port": port, "sapphire_region": "primary"}}
                },
            },
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "sapphire_environment": "it",
                "sapphire_namespace": (cluster or {}).get("sapphire_namespace", "trading-system"),
                "redis_mode": "host",
                "postgres_mode": "host",
                # The fixture's servers are plain test servers, not the role's (TLS).
                "postgres_tls": False,
                "redis_tls": False,
                "monitoring_mode": "host",
                "redis_password": platform["redis"].password,
                "postgres_password": platform["postgres"].password,
                **POSTGRES_LOGIN_PASSWORDS, **REDIS_USER_PASSWORDS,
                "trading_agents": AGENTS,
                "workload_enabled": True,
                "workload_coordinator_port": platform["workload"].port,
                "sapphire_local_dir": str(tmp_path),
                "validate_report_dir": str(tmp_path / "reports"),
                "validate_components": components or ["redis", "postgres", "monitoring", "agents"],
            },
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def reports(tmp_path: Path) -> tuple[dict[str, Any], Element]:
    report = json.loads((tmp_path / "reports" / "validate.json").read_text())
    junit = parse_xml((tmp_path / "reports" / "validate.junit.xml").read_text())
    return report, junit


def all_checks(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(item["component"], check) for item in report["reports"] for check in item["checks"]]


def test_healthy_platform_validates_green(tmp_path: Path, platform: dict[str, Any], run_playbook: Any) -> None:
    inventory = write_inventory(tmp_path, platform)
    started = time.monotonic()
    result = run_playbook("validate.yml", inventory)
    elapsed = time.monotonic() - started
    print(f"\nvalidate.yml on the healthy platform (servers, no cluster) took {elapsed:.1f}s")
    assert result.rc == 0, result.explain()
    assert result.changed <= 1  # at most the report directory on first use
    report, junit = reports(tmp_path)
    assert report["healthy"] is True
    assert report["summary"]["fail"] == 0 and report["summary"]["warn"] == 0
    assert report["problems"] == []
    components = {item["component"] for item in report["reports"]}
    assert components == {
        "redis",
        "postgres",
        "monitoring",
        "heartbeats",
        "circuit_breakers",
        "coordinator",
        "market_data",
        "risk",
        "positions",
    }
    names = {check["name"] for _, check in all_checks(report)}
    assert {
        "redis_aof",
        "postgres_replication",
        "heartbeat:momentum",
        "circuit:exchange",
        "coordinator_health",
        "risk_window_pnl",
        "positions:momentum",
        "alerts_critical",
        "postgres_table:trades",
    } <= names
    assert junit.attrib["failures"] == "0"
    assert int(junit.attrib["tests"]) == len(all_checks(report))
    assert platform["redis"].password not in result.stdout + json.dumps(report)


def test_open_breaker_and_coordinator_500_fail_validate_under_check(
    tmp_path: Path, platform: dict[str, Any], run_playbook: Any
) -> None:
    client = platform["redis"].client()
    saved = client.hgetall("sapphire:circuit:exchange")
    client.hset("sapphire:circuit:exchange", mapping={"state": "open", "since": str(time.time() - 5)})
    platform["workload"].set_fault({"health_status": 500})
    try:
        result = run_playbook("validate.yml", write_inventory(tmp_path, platform), check=True)
    finally:
        client.hset("sapphire:circuit:exchange", mapping=saved)
        platform["workload"].set_fault({})
    assert result.rc != 0
    assert "The platform is unhealthy" in result.explain()
    report, junit = reports(tmp_path)  # written under --check too
    assert report["healthy"] is False
    failing = {check["name"] for _, check in all_checks(report) if check["status"] == "fail"}
    assert failing == {"circuit:exchange", "coordinator_health"}
    assert any("exchange is OPEN" in problem for problem in report["problems"])
    assert any("HTTP 500" in problem for problem in report["problems"])
    failures = [case.attrib["name"] for case in junit.iter("testcase") if case.find("failure") is not None]
    assert sorted(failures) == ["circuit:exchange", "coordinator_health"]


def test_halt_flag_is_a_warning_that_fails_only_with_fail_on_warning(
    tmp_path: Path, platform: dict[str, Any], run_playbook: Any
) -> None:
    client = platform["redis"].client()
    client.set("sapphire:halt", json.dumps({"reason": "drill", "actor": "pytest", "ts": time.time()}))
    try:
        inventory = write_inventory(tmp_path, platform)
        result = run_playbook(
            "validate.yml", inventory, extra_vars={"validate_fail_on": "warning", "validate_components": ["agents"]}
        )
    finally:
        client.delete("sapphire:halt")
    assert result.rc != 0
    report, junit = reports(tmp_path)
    assert report["summary"]["fail"] == 0
    assert report["summary"]["warn"] == 1
    assert any("HALTED" in problem and "pytest" in problem for problem in report["problems"])
    assert junit.attrib["failures"] == "1"


def test_bad_fail_on_is_rejected_before_any_check(tmp_path: Path, platform: dict[str, Any], run_playbook: Any) -> None:
    result = run_playbook(
        "validate.yml", write_inventory(tmp_path, platform), extra_vars={"validate_fail_on": "sometimes"}
    )
    assert result.rc != 0
    assert "validate_fail_on" in result.explain()
    assert not (tmp_path / "reports").exists()


@pytest.mark.cluster
def test_full_validate_with_a_cluster_host(tmp_path: Path, platform: dict[str, Any], local_clusters: Any,
                                           run_playbook: Any) -> None:
    """Every component, including the namespace of a (throw-away, empty) namespace on local-primary."""
    import secrets

    from kubernetes import client

    api = local_clusters.client("local-primary")
    namespace = f"sapphire-it-{secrets.token_hex(3)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    try:
        cluster = {"k8s_kubeconfig": str(local_clusters.kubeconfigs["local-primary"]), "k8s_context": "local-primary",
                   "sapphire_namespace": namespace}
        inventory = write_inventory(tmp_path, platform, cluster=cluster,
                                    components=["redis", "postgres", "monitoring", "namespace", "agents"])
        started = time.monotonic()
        result = run_playbook("validate.yml", inventory)
        print(f"\nvalidate.yml with a cluster host took {time.monotonic() - started:.1f}s")
    finally:
        client.CoreV1Api(api).delete_namespace(namespace)
    assert result.rc == 0, result.explain()
    report, _ = reports(tmp_path)
    namespace_report = next(item for item in report["reports"] if item["component"] == "namespace")
    assert namespace_report["healthy"] is True
    assert {check["name"] for check in namespace_report["checks"]} >= {"kubernetes_api", "namespace"}
