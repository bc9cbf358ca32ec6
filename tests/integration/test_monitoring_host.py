"""Host-mode monitoring end to end: the role installs, configures and runs the distribution's
Prometheus and Alertmanager on free ports under tmp_path, and an operator's checks hold:
ready, the Sapphire rules loaded, the coordinator scraped, alerts routed, idempotent, reloads
on a threshold change, and a busy port is refused before anything is written.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

PLAYBOOK = "tests/integration/playbooks/monitoring.yml"
SEED_ALERTS = {"HighErrorRate", "HighLatency", "TradingLoss", "PortfolioDailyLoss", "RedisDown", "PostgreSQLDown",
               "HighMemoryUsage", "HighCPUUsage", "CircuitBreakerOpen", "ResourceQuotaNearExhaustion",
               "AgentHeartbeatMissing", "BackupStale"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.servers,
    pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
                       reason="prometheus/prometheus-alertmanager not installed; run tools/setup-packages"),
]

COORDINATOR_METRICS = """# TYPE sapphire_agent_last_heartbeat_timestamp_seconds gauge
sapphire_agent_last_heartbeat_timestamp_seconds{agent="momentum",tier="standard"} {now}
# TYPE sapphire_realized_pnl_1h_usd gauge
sapphire_realized_pnl_1h_usd -1500
# TYPE sapphire_circuit_breaker_state gauge
sapphire_circuit_breaker_state{name="exchange"} 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeCoordinator(BaseHTTPRequestHandler):
    """Serves a /metrics page like the synthetic workload's coordinator."""

    def do_GET(self) -> None:
        body = COORDINATOR_METRICS.replace("{now}", f"{time.time():.0f}").encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def get_json(url: str) -> Any:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def http_status(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def wait_for(predicate, timeout: float = 90, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    return last


def write_inventory(directory: Path, host_vars: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    inventory = {"all": {
        "children": {"monitoring_hosts": {"hosts": {"mon-test": host_vars}}},
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "sapphire_local_dir": str(directory / "local"),
            "monitoring_mode": "host",
            # tmp_path is private to this user (0700), so the servers run as this user here;
            # the default (the package's `prometheus` user) is what the local inventory uses.
            "monitoring_host_user": getpass.getuser(),
            "monitoring_prometheus_scrape_interval": "2s",
            "monitoring_prometheus_evaluation_interval": "2s",
            "monitoring_alertmanager_group_wait": "1s",
            **(extra or {}),
        },
    }}
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def explain(result: Any) -> str:
    """The playbook's failures including loop items and server log tails (for assertion messages)."""
    lines = [result.explain()]
    for play in result.plays:
        for task in play.get("tasks", []):
            for host_result in task["hosts"].values():
                for item in host_result.get("results", []):
                    if item.get("failed"):
                        lines.append(f"{task['task']['name']}: {item.get('msg', '')}\n{item.get('log_tail', '')}")
    return "\n".join(lines)


def stop_servers(base: Path) -> None:
    for name in ("prometheus", "alertmanager"):
        pidfile = base / "run" / f"{name}.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=20, interval=0.2)


class Deployment:
    def __init__(self, directory: Path, inventory: Path, ports: dict[str, int], first: Any, runner: Any) -> None:
        self.directory = directory
        self.inventory = inventory
        self.ports = ports
        self.first = first
        self.run = runner
        self.base = directory / "local" / "prometheus" / "mon-test"
        self.prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        self.alertmanager = f"http://127.0.0.1:{ports['alertmanager']}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, playbook_runner: Any) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("monitoring-host")
    coordinator = ThreadingHTTPServer(("127.0.0.1", 0), FakeCoordinator)
    threading.Thread(target=coordinator.serve_forever, daemon=True).start()
    ports = {"prometheus": free_port(), "alertmanager": free_port(), "coordinator": coordinator.server_address[1]}
    inventory = write_inventory(directory, {"prometheus_port": ports["prometheus"],
                                            "alertmanager_port": ports["alertmanager"]},
                                {"workload_coordinator_port": ports["coordinator"]})
    first = playbook_runner(PLAYBOOK, inventory)
    deployed = Deployment(directory, inventory, ports, first, playbook_runner)
    try:
        yield deployed
    finally:
        stop_servers(deployed.base)
        coordinator.shutdown()


def test_first_run_starts_prometheus_and_alertmanager(deployment: Deployment) -> None:
    assert deployment.first.rc == 0, explain(deployment.first)
    assert deployment.first.changed > 0
    assert http_status(deployment.prometheus + "/-/ready") == 200
    assert http_status(deployment.alertmanager + "/-/ready") == 200


def test_rendered_configuration_passes_promtool_and_amtool(deployment: Deployment) -> None:
    config = deployment.base / "config"
    for command in (["promtool", "check", "config", str(config / "prometheus.yml")],
                    ["promtool", "check", "rules", str(config / "rules" / "sapphire-alerts.yml")],
                    ["amtool", "check-config", str(config / "alertmanager.yml")]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_loaded_the_sapphire_rules(deployment: Deployment) -> None:
    rendered = yaml.safe_load((deployment.base / "config" / "rules" / "sapphire-alerts.yml").read_text())
    expected = {rule["alert"] for group in rendered["groups"] for rule in group["rules"]}
    groups = get_json(deployment.prometheus + "/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
    assert SEED_ALERTS <= loaded
    assert loaded == expected


def test_prometheus_scrapes_itself_and_the_coordinator(deployment: Deployment) -> None:
    def healthy_jobs() -> set[str]:
        targets = get_json(deployment.prometheus + "/api/v1/targets")["data"]["activeTargets"]
        return {target["labels"]["job"] for target in targets if target["health"] == "up"}

    # Each target turns "up" at its first scrape; wait for all three rather than assert on whichever came first.
    jobs = wait_for(lambda: {"prometheus", "alertmanager", "trading-coordinator"} <= healthy_jobs() and healthy_jobs())
    assert jobs and {"prometheus", "alertmanager", "trading-coordinator"} <= jobs, f"healthy jobs: {jobs}"
    query = deployment.prometheus + "/api/v1/query?query=sapphire_agent_last_heartbeat_timestamp_seconds"
    series = get_json(query)["data"]["result"]
    assert [item["metric"]["agent"] for item in series] == ["momentum"]


def test_a_trading_loss_reaches_alertmanager_on_the_pager_route(deployment: Deployment) -> None:
    def pager_alerts() -> list[dict[str, Any]]:
        alerts = get_json(deployment.alertmanager + "/api/v2/alerts")
        return [alert for alert in alerts if alert["labels"].get("alertname") == "TradingLoss"]

    alerts = wait_for(pager_alerts, timeout=90)
    assert alerts, "TradingLoss (-1500 USD in 1 h) never reached Alertmanager"
    assert alerts[0]["labels"]["severity"] == "critical"
    assert [receiver["name"] for receiver in alerts[0]["receivers"]] == ["pager"]
    circuit = get_json(deployment.prometheus + "/api/v1/alerts")["data"]["alerts"]
    assert not [alert for alert in circuit if alert["labels"]["alertname"] == "CircuitBreakerOpen"]


def test_second_run_changes_nothing(deployment: Deployment) -> None:
    again = deployment.run(PLAYBOOK, deployment.inventory)
    assert again.rc == 0, explain(again)
    assert again.changed == 0, f"changed on the second run: {again.changed_tasks()}"


def test_threshold_change_is_rendered_checked_and_reloaded(deployment: Deployment) -> None:
    pid_before = (deployment.base / "run" / "prometheus.pid").read_text().strip()
    changed = deployment.run(PLAYBOOK, deployment.inventory, extra_vars={"monitoring_alert_trading_loss_usd": 2500})
    assert changed.rc == 0, explain(changed)
    assert any(name.endswith("Render the Sapphire alert rules") for name in changed.changed_tasks())

    def loss_query() -> str:
        groups = get_json(deployment.prometheus + "/api/v1/rules")["data"]["groups"]
        return next(rule["query"] for group in groups for rule in group["rules"] if rule["name"] == "TradingLoss")

    assert wait_for(lambda: "-2500" in loss_query(), timeout=30), loss_query()
    assert (deployment.base / "run" / "prometheus.pid").read_text().strip() == pid_before, "reload, not restart"
    # reloaded by SIGHUP: the lifecycle API, which would let anyone who reaches the port stop Prometheus, is closed
    quit_request = requests.post(deployment.prometheus + "/-/quit", timeout=10)
    assert quit_request.status_code == 403, (quit_request.status_code, quit_request.text)


def test_a_busy_prometheus_port_is_refused_before_anything_is_written(tmp_path: Path, playbook_runner: Any) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        inventory = write_inventory(tmp_path, {"prometheus_port": busy, "alertmanager_port": free_port()})
        result = playbook_runner(PLAYBOOK, inventory)
    assert result.rc != 0
    messages = "\n".join(result.failure_messages())
    assert "prometheus_port" in messages and str(busy) in messages, messages
    assert f"pid {os.getpid()})" in " ".join(messages.split()), messages  # the process that holds it: this test
    assert not (tmp_path / "local").exists(), "directories were created before the port check failed"
