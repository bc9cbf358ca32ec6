"""emergency-stop.yml and resume.yml on the local-primary cluster, with a real Redis of the test's own.

The platform is deployed into a throw-away namespace (deploy.yml --limit local-primary -e
sapphire_namespace=...), the halt flag goes to a redis-server this test starts (never the local
default's Redis). An operator relies on: zero agent pods and the flag set after the stop, the
coordinator untouched, the same with Redis down (reported, agents still at zero), a deploy while
halted keeping the agents at zero, resume restoring the recorded counts, and validate.yml's
auto_halt_on_loss stopping trading when the loss limit breaks (and only reporting without it).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import POSTGRES_LOGIN_PASSWORDS, REDIS_USER_PASSWORDS
from sapphire_testlib import LocalClusters, leaked_secrets, local_vault, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.servers, pytest.mark.slow]

AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 2},
          {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1},
          {"name": "pairs", "strategy": "pairs", "tier": "standard", "replicas": 1}]
EXPECTED = {"agent-momentum": 2, "agent-breakout": 1, "agent-pairs": 1}


def platform_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    # Not a test of the trading-aware gate (test_trading_gate.py): the throw-away namespace trades nothing.
    return {"sapphire_namespace": namespace, "workload_enabled": False, "agents_gate_enabled": False,
            "trading_agents": AGENTS,
            "coordinator_min_replicas": 1, "agents_coordinator_min_replicas": 1, **extra}


def kube_json(clusters: LocalClusters, namespace: str, *args: str) -> dict[str, Any]:
    return json.loads(clusters.kubectl("local-primary", "-n", namespace, *args, "-o", "json").stdout)


def replicas(clusters: LocalClusters, namespace: str) -> dict[str, int]:
    items = kube_json(clusters, namespace, "get", "deployments")["items"]
    return {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in items}


def agent_pods(clusters: LocalClusters, namespace: str) -> list[str]:
    items = kube_json(clusters, namespace, "get", "pods", "-l", "app.kubernetes.io/component=agent")["items"]
    return [p["metadata"]["name"] for p in items if p["status"].get("phase") not in ("Succeeded", "Failed")]


def wait_pods(clusters: LocalClusters, namespace: str, count: int, timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    pods = agent_pods(clusters, namespace)
    while len(pods) != count and time.monotonic() < deadline:
        time.sleep(1)
        pods = agent_pods(clusters, namespace)
    return pods


@pytest.fixture
def halt_redis(throwaway_redis: Any) -> Any:
    """A redis-server of this test's own (tests/integration/conftest.py), never the local default's."""
    return throwaway_redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def platform(local_clusters: LocalClusters) -> Iterator[str]:
    namespace = f"it-estop-{uuid.uuid4().hex[:6]}"
    result = run_playbook("deploy.yml", limit="local-primary", extra_vars=platform_vars(namespace))
    assert result.rc == 0, result.explain()
    yield namespace
    local_clusters.kubectl("local-primary", "delete", "namespace", namespace, "--wait=false", check=False)


def stop_vars(namespace: str, redis: Any, **extra: Any) -> dict[str, Any]:
    return platform_vars(namespace, redis_password=redis.password,
                         redis_monitor_password=REDIS_USER_PASSWORDS["redis_monitor_password"],
                         agents_halt_redis_endpoint={"host": "127.0.0.1", "port": redis.port},
                         redis_tls=False,  # the throwaway Redis is a plain test server, not one of the role's (TLS)
                         **extra)


def test_stop_halts_scales_to_zero_and_resume_restores(platform: str, local_clusters: LocalClusters,
                                                       halt_redis: Any) -> None:
    namespace = platform
    assert {k: v for k, v in replicas(local_clusters, namespace).items() if k.startswith("agent-")} == EXPECTED

    # The stop and the resume run as AWX jobs (tests/awx_job.py: the local inventory as AWX syncs it, the vault
    # answered by the Vault credential's password): nothing AWX stores of them holds a secret.
    secrets = {**local_vault(), "the halt Redis' password": halt_redis.password}
    started = time.monotonic()
    stop = run_playbook("emergency-stop.yml", limit="local-primary", awx_job_id=3101,
                        extra_vars=stop_vars(namespace, halt_redis, emergency_stop_reason="daily loss limit",
                                             emergency_stop_actor="it-test"))
    print(f"emergency-stop took {time.monotonic() - started:.1f} s (whole AWX job)")
    assert stop.rc == 0, stop.explain()
    assert stop.job.status == "successful" and stop.job.leaked(secrets) == []
    assert agent_pods(local_clusters, namespace) == []
    halt = json.loads(halt_redis.client().get("sapphire:halt"))
    assert halt["reason"] == "daily loss limit" and halt["actor"] == "it-test" and halt["ts"] > 0
    counts = replicas(local_clusters, namespace)
    assert all(counts[name] == 0 for name in EXPECTED)
    assert counts["trading-coordinator"] >= 1  # the coordinator keeps running
    deployments = kube_json(local_clusters, namespace, "get", "deployments")["items"]
    recorded = {d["metadata"]["name"]: d["metadata"].get("annotations", {}).get("sapphire.io/halted-replicas")
                for d in deployments}
    assert {name: recorded[name] for name in EXPECTED} == {k: str(v) for k, v in EXPECTED.items()}
    policies = [p["metadata"]["name"] for p in kube_json(local_clusters, namespace, "get", "networkpolicies")["items"]]
    assert "agents-exchange-egress" not in policies and "coordinator-exchange-egress" in policies

    # A second stop changes nothing and keeps the recorded counts.
    again = run_playbook("emergency-stop.yml", limit="local-primary",
                         extra_vars=stop_vars(namespace, halt_redis, emergency_stop_reason="again"))
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
    assert json.loads(halt_redis.client().get("sapphire:halt"))["reason"] == "daily loss limit"

    # A deploy while halted keeps the agents at zero.
    deploy = run_playbook("deploy.yml", limit="local-primary", extra_vars=platform_vars(namespace))
    assert deploy.rc == 0, deploy.explain()
    assert wait_pods(local_clusters, namespace, 0, timeout=10) == []
    assert all(replicas(local_clusters, namespace)[name] == 0 for name in EXPECTED)

    resume = run_playbook("resume.yml", limit="local-primary", awx_job_id=3102,
                          extra_vars=stop_vars(namespace, halt_redis, validate_components=["namespace"]))
    assert resume.rc == 0, resume.explain()
    assert resume.job.status == "successful" and resume.job.leaked(secrets) == []
    counts = replicas(local_clusters, namespace)
    assert {name: counts[name] for name in EXPECTED} == EXPECTED
    assert len(wait_pods(local_clusters, namespace, sum(EXPECTED.values()))) == sum(EXPECTED.values())
    assert halt_redis.client().get("sapphire:halt") is None
    policies = [p["metadata"]["name"] for p in kube_json(local_clusters, namespace, "get", "networkpolicies")["items"]]
    assert "agents-exchange-egress" in policies
    quotas = [q["metadata"]["name"] for q in kube_json(local_clusters, namespace, "get", "resourcequotas")["items"]]
    assert "sapphire-emergency-stop" not in quotas

    idle = run_playbook("resume.yml", limit="local-primary",
                        extra_vars=stop_vars(namespace, halt_redis, resume_validate=False))
    assert idle.rc == 0, idle.explain()
    assert idle.changed == 0, idle.changed_tasks()


def test_stop_with_redis_down_still_scales_to_zero_and_reports_the_flag(platform: str,
                                                                         local_clusters: LocalClusters) -> None:
    namespace = platform
    dead = {"host": "127.0.0.1", "port": free_port()}  # nothing listens there
    stop = run_playbook("emergency-stop.yml", limit="local-primary",
                        extra_vars=platform_vars(namespace, redis_password="x", agents_halt_redis_endpoint=dead,
                                                 emergency_stop_reason="exchange outage"))
    assert stop.rc != 0
    report = "\n".join(stop.failure_messages())
    assert "halt-flag" in report and f"redis 127.0.0.1:{dead['port']}" in report, report
    assert "could not be set" in report, report
    assert agent_pods(local_clusters, namespace) == []
    counts = replicas(local_clusters, namespace)
    assert all(counts[name] == 0 for name in EXPECTED)

    resume = run_playbook("resume.yml", limit="local-primary",
                          extra_vars=platform_vars(namespace, agents_halt_set_flag=False, resume_validate=False))
    assert resume.rc == 0, resume.explain()
    counts = replicas(local_clusters, namespace)
    assert {name: counts[name] for name in EXPECTED} == EXPECTED


def test_stop_without_a_reason_is_refused_before_anything(platform: str, local_clusters: LocalClusters) -> None:
    before = replicas(local_clusters, platform)
    result = run_playbook("emergency-stop.yml", limit="local-primary",
                          extra_vars=platform_vars(platform, emergency_stop_reason="  "))
    assert result.rc != 0
    assert "emergency_stop_reason" in "\n".join(result.failure_messages())
    assert replicas(local_clusters, platform) == before


def test_stop_under_check_changes_nothing_says_so_and_prints_no_secret(platform: str, local_clusters: LocalClusters,
                                                                       halt_redis: Any) -> None:
    """--check --diff at -vvv, as an operator rehearses the stop: each step says what it would do, and nothing is
    done (no flag, no halt record, no agent scaled); the summary does not claim that trading stopped; no secret in the
    output."""
    namespace = platform
    before = replicas(local_clusters, namespace)
    secrets = {**local_vault(), "the halt Redis' password": halt_redis.password}
    rehearsal = run_playbook("emergency-stop.yml", limit="local-primary", check=True, diff=True, verbosity=3,
                             json_output=False,
                             extra_vars=stop_vars(namespace, halt_redis, emergency_stop_reason="stop drill"))
    output = rehearsal.stdout + rehearsal.stderr
    assert rehearsal.rc == 0, output[-3000:]
    assert "would be set" in output
    assert "Check mode: nothing was changed" in output and "Trading stopped" not in output
    assert halt_redis.client().get("sapphire:halt") is None
    assert replicas(local_clusters, namespace) == before
    record = local_clusters.kubectl("local-primary", "-n", namespace, "get", "configmap", "sapphire-emergency-stop",
                                    check=False)
    assert record.returncode != 0 and "NotFound" in record.stderr
    assert leaked_secrets(output, secrets) == [], "emergency-stop.yml --check printed a secret at -vvv --diff"


def test_validate_halts_trading_on_a_broken_loss_limit_only_with_auto_halt_on_loss(
        platform: str, local_clusters: LocalClusters, halt_redis: Any, throwaway_postgres: Any, tmp_path: Any) -> None:
    """validate.yml's risk check fails on a realized loss over validate_max_hourly_loss; with
    auto_halt_on_loss it runs the emergency stop of that cluster, without it it only reports."""
    namespace = platform
    assert sum(replicas(local_clusters, namespace)[name] for name in EXPECTED) == sum(EXPECTED.values())
    throwaway_postgres.psql("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, pnl) "
                            "VALUES (now(), 'BTC/USDT', 'momentum', 'sell', 1, 50000, -25000)")

    def validate(**extra: Any) -> Any:
        return run_playbook("validate.yml", limit="local-primary", extra_vars=stop_vars(
            namespace, halt_redis, validate_components=["agents"], validate_report_dir=str(tmp_path),
            validate_redis_endpoint={"host": "127.0.0.1", "port": halt_redis.port},
            validate_postgres_endpoint={"host": "127.0.0.1", "port": throwaway_postgres.port},
            postgres_tls=False,  # the throwaway server is a plain test server, not one of the role's (TLS)
            postgres_monitor_password=POSTGRES_LOGIN_PASSWORDS["postgres_monitor_password"],
            validate_max_hourly_loss=1000, **extra))

    report_only = validate()
    assert report_only.rc != 0, "a broken loss limit fails validate"
    risk = next(item for item in json.loads((tmp_path / "validate.json").read_text())["reports"]
                if item["component"] == "risk")
    assert any("realized loss 25000.00 USD" in problem for problem in risk["problems"]), risk["problems"]
    assert halt_redis.client().get("sapphire:halt") is None
    assert all(replicas(local_clusters, namespace)[name] == count for name, count in EXPECTED.items())

    halting = validate(auto_halt_on_loss=True)
    assert halting.rc != 0
    assert wait_pods(local_clusters, namespace, 0) == []
    assert all(replicas(local_clusters, namespace)[name] == 0 for name in EXPECTED)
    halt = json.loads(halt_redis.client().get("sapphire:halt"))
    assert halt["actor"] == "validate.yml (auto_halt_on_loss)"
    assert "realized loss 25000.00 USD" in halt["reason"], halt["reason"]

    resume = run_playbook("resume.yml", limit="local-primary",
                          extra_vars=stop_vars(namespace, halt_redis, resume_validate=False))
    assert resume.rc == 0, resume.explain()
    assert {name: replicas(local_clusters, namespace)[name] for name in EXPECTED} == EXPECTED
