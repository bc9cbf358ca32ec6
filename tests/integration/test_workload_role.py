"""The workload role on real servers of its own (a Redis and a PostgreSQL primary): a workload its last converge left
running is recognised in one task and left alone; one that died is started again; one whose ensemble changed is
restarted."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import AGENTS, POSTGRES_LOGIN_PASSWORDS, REDIS_USER_PASSWORDS, PostgresServer, RedisServer, free_port
from sapphire_testlib import run_playbook, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PLAYBOOK = "tests/integration/playbooks/workload.yml"
RECOGNISE = "workload : Recognise a workload its last converge left as it is"
RUN = "workload : Ensure the synthetic workload runs"


def inventory(tmp_path: Path, redis: RedisServer, postgres: PostgresServer, port: int) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {
        "children": {
            "clusters": {"hosts": {"it-primary": {"sapphire_region": "primary"}}},
            "redis_hosts": {"hosts": {"redis-primary": {
                "redis_port": redis.port, "redis_replication_role": "primary", "sapphire_region": "primary"}}},
            "postgres_hosts": {"hosts": {"postgres-primary": {
                "postgres_port": postgres.port, "postgres_replication_role": "primary", "sapphire_region": "primary"}}},
        },
        "vars": {
            "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "redis_mode": "host", "postgres_mode": "host", "redis_password": redis.password,
            "redis_tls": False,  # the throwaway Redis is a plain test server, not one of the role's (TLS)
            "redis_agent_user": "sapphire-agent", "redis_agent_password": REDIS_USER_PASSWORDS["redis_agent_password"],
            "postgres_agent_user": "sapphire_agent", "postgres_database": "sapphire",
            "postgres_agent_password": POSTGRES_LOGIN_PASSWORDS["postgres_agent_password"],
            "sapphire_release": "2026.11.0", "trading_agents": AGENTS, "sapphire_local_dir": str(tmp_path),
            "workload_coordinator_port": port,
        },
    }}))
    return path


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text


def failed_decisions(port: int) -> float:
    """sapphire_agent_errors_total of release 2026.11.0, summed over its agents."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics(port).splitlines()
               if line.startswith("sapphire_agent_errors_total{") and 'release="2026.11.0"' in line)


def test_a_running_workload_is_recognised_and_a_dead_or_changed_one_converged_again(
        tmp_path: Path, throwaway_redis: RedisServer, throwaway_postgres: PostgresServer) -> None:
    port = free_port()
    hosts = inventory(tmp_path, throwaway_redis, throwaway_postgres, port)
    state = tmp_path / "workload" / "it-primary"

    def run(**extra: Any) -> Any:
        result = run_playbook(PLAYBOOK, hosts, extra_vars=extra or None)
        assert result.rc == 0, result.explain()
        return result

    try:
        first = run()
        assert first.task_results(RUN)["it-primary"]["changed"]
        wait_for(lambda: healthy(port), 30, "the workload's coordinator port")

        again = run()
        assert again.task_results(RECOGNISE)["it-primary"]["converged"] is True
        assert again.task_results(RUN)["it-primary"].get("skipped"), "the converge ran on a workload nothing touched"
        assert again.changed == 0, again.changed_tasks()

        os.kill(int((state / "workload.pid").read_text()), signal.SIGKILL)
        wait_for(lambda: not healthy(port), 30, "the workload to die")
        revived = run()
        assert revived.task_results(RECOGNISE)["it-primary"]["reasons"], "the dead process must be a reason"
        assert revived.task_results(RUN)["it-primary"]["changed"]
        wait_for(lambda: healthy(port), 30, "the workload to answer again")

        fewer = AGENTS[:1]
        before = (state / "workload.pid").read_text()
        changed = run(trading_agents=fewer)
        assert changed.task_results(RECOGNISE)["it-primary"]["converged"] is False
        assert json.loads((state / "agents.json").read_text()) == fewer
        assert changed.task_results(RUN)["it-primary"]["changed"], "the workload reads the ensemble when it starts"
        assert (state / "workload.pid").read_text() != before
        wait_for(lambda: healthy(port), 30, "the restarted workload")

        # Told that its release misbehaves, it is restarted and its metrics say so for that release.
        bad = run(trading_agents=fewer, workload_misbehave={"release": "2026.11.0", "error_rate": 1.0,
                                                            "stale_heartbeats": True})
        assert bad.task_results(RUN)["it-primary"]["changed"]
        wait_for(lambda: failed_decisions(port) > 0, 30, "failed decisions of release 2026.11.0")
        assert "sapphire_agent_last_heartbeat_timestamp_seconds{" not in metrics(port)
    finally:
        run_playbook(PLAYBOOK, hosts, extra_vars={"workload_state": "stopped"})
