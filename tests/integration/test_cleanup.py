"""cleanup.yml on the local-primary cluster: a true dry run, exact deletion, data kept.

The platform is deployed into a throw-away namespace with three agents; the test then runs cleanup
with one agent removed from trading_agents (as an operator who edited the inventory would) and
checks that the dry run lists exactly that agent's objects and deletes nothing, that the real run
deletes exactly that list, that labelled PVCs and Secrets survive (also a teardown), that a second
run finds nothing, that cleanup_include_data without cleanup_data_names is refused before any
deletion, and that deleting (cleanup_dry_run=false) is refused without confirm equal to the
environment name (local) while a --check run needs no confirm.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sapphire_testlib import LocalClusters, run_playbook

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

AGENTS = [{"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 2},
          {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1},
          {"name": "pairs", "strategy": "pairs", "tier": "standard", "replicas": 1}]
REMAINING = [agent for agent in AGENTS if agent["name"] != "momentum"]
LABELS = {"app.kubernetes.io/managed-by": "sapphire-ops", "app.kubernetes.io/part-of": "sapphire"}


def platform_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    # Not a test of the trading-aware gate (test_trading_gate.py): the throw-away namespace trades nothing.
    return {"sapphire_namespace": namespace, "workload_enabled": False, "agents_gate_enabled": False,
            "trading_agents": AGENTS,
            "coordinator_min_replicas": 1, "agents_coordinator_min_replicas": 1, **extra}


def listing(clusters: LocalClusters, namespace: str) -> set[tuple[str, str]]:
    kinds = "deployments,configmaps,poddisruptionbudgets,horizontalpodautoscalers,services,secrets,pvc,networkpolicies"
    items = json.loads(clusters.kubectl("local-primary", "-n", namespace, "get", kinds, "-o", "json").stdout)["items"]
    return {(item["kind"], item["metadata"]["name"]) for item in items}


def plan_lines(result: Any) -> list[str]:
    """The lines of the role task that shows the plan (named "agents : Show ..." by the json callback)."""
    shown = result.task_results("agents : Show what cleanup deletes in this namespace") or \
        result.task_results("Show what cleanup deletes in this namespace")
    assert shown, result.explain()
    return [line for host in shown.values() for line in host["msg"]]


@pytest.fixture(scope="module")
def platform(local_clusters: LocalClusters) -> Iterator[str]:
    namespace = f"it-clean-{uuid.uuid4().hex[:6]}"
    result = run_playbook("deploy.yml", limit="local-primary", extra_vars=platform_vars(namespace))
    assert result.rc == 0, result.explain()
    # Data that looks like the removed agent's: labelled, named after it. It must survive.
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "agent-momentum-state", "namespace": namespace,
                        "labels": {**LABELS, "app.kubernetes.io/component": "agent", "sapphire.io/agent": "momentum"}},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    apply = local_clusters_apply(local_clusters, pvc)
    assert apply.returncode == 0, apply.stderr
    yield namespace
    local_clusters.kubectl("local-primary", "delete", "namespace", namespace, "--wait=false", check=False)


def local_clusters_apply(clusters: LocalClusters, obj: dict[str, Any]) -> Any:
    import subprocess

    from sapphire_testlib import kube_binary

    return subprocess.run([str(kube_binary("kubectl")), "--kubeconfig", str(clusters.kubeconfigs["local-primary"]),
                           "apply", "-f", "-"], input=json.dumps(obj), capture_output=True, text=True, timeout=60)


def test_dry_run_lists_exactly_the_removed_agent_and_the_real_run_deletes_it(platform: str,
                                                                             local_clusters: LocalClusters) -> None:
    namespace = platform
    before = listing(local_clusters, namespace)
    removed = {("Deployment", "agent-momentum"), ("ConfigMap", "agent-momentum"),
               ("PodDisruptionBudget", "agent-momentum")}
    assert removed <= before

    for check in (False, True):  # the default dry run, and --check
        dry = run_playbook("cleanup.yml", limit="local-primary", check=check,
                           extra_vars=platform_vars(namespace, trading_agents=REMAINING))
        assert dry.rc == 0, dry.explain()
        lines = [line for line in plan_lines(dry) if line.startswith("WOULD DELETE")]
        assert sorted(lines) == sorted(
            f"WOULD DELETE {kind} {namespace}/{name}: agent 'momentum' is no longer in trading_agents"
            for kind, name in removed), lines
        assert dry.changed == 0, dry.changed_tasks()
        assert listing(local_clusters, namespace) == before

    # Deleting without confirm (and with another environment's name; cleanup_dry_run as the string an AWX
    # survey or -e key=value gives) is refused before anything is deleted.
    for extra in ({"cleanup_dry_run": False}, {"cleanup_dry_run": "false", "confirm": "prod"}):
        refused = run_playbook("cleanup.yml", limit="local-primary",
                               extra_vars=platform_vars(namespace, trading_agents=REMAINING, **extra))
        assert refused.rc != 0, extra
        message = " ".join("\n".join(refused.failure_messages()).split())
        assert "-e confirm=local" in message and "Nothing was written" in message, message
        assert "cleanup_dry_run=false deletes" in message and namespace in message, message
        assert refused.changed == 0, refused.changed_tasks()
        assert listing(local_clusters, namespace) == before
    # --check writes nothing: it needs no confirm and is not refused (it reports the deletions it would make).
    checked = run_playbook("cleanup.yml", limit="local-primary", check=True,
                           extra_vars=platform_vars(namespace, trading_agents=REMAINING, cleanup_dry_run=False))
    assert checked.rc == 0, checked.explain()
    assert listing(local_clusters, namespace) == before

    real = run_playbook("cleanup.yml", limit="local-primary",
                        extra_vars=platform_vars(namespace, trading_agents=REMAINING, cleanup_dry_run=False,
                                                 confirm="local"))
    assert real.rc == 0, real.explain()
    after = listing(local_clusters, namespace)
    assert after == before - removed
    assert ("PersistentVolumeClaim", "agent-momentum-state") in after
    assert {name for kind, name in after if kind == "Secret"} >= {"redis-credentials", "postgres-credentials"}
    assert any("KEEP (data) PersistentVolumeClaim" in line for line in plan_lines(real))

    second = run_playbook("cleanup.yml", limit="local-primary",
                          extra_vars=platform_vars(namespace, trading_agents=REMAINING, cleanup_dry_run=False,
                                                   confirm="local"))
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()
    assert not [line for line in plan_lines(second) if "DELETE" in line]


def test_include_data_without_data_names_is_refused_before_any_deletion(platform: str,
                                                                         local_clusters: LocalClusters) -> None:
    before = listing(local_clusters, platform)
    result = run_playbook("cleanup.yml", limit="local-primary",
                          extra_vars=platform_vars(platform, cleanup_scope="teardown", cleanup_dry_run=False,
                                                   cleanup_include_data=True, confirm="local"))
    assert result.rc != 0
    message = "\n".join(result.failure_messages())
    assert "cleanup_include_data" in message and "cleanup_data_names" in message, message
    assert listing(local_clusters, platform) == before


def test_teardown_keeps_the_data(platform: str, local_clusters: LocalClusters) -> None:
    result = run_playbook("cleanup.yml", limit="local-primary",
                          extra_vars=platform_vars(platform, cleanup_scope="teardown", cleanup_dry_run=False,
                                                   confirm="local"))
    assert result.rc == 0, result.explain()
    left = listing(local_clusters, platform)
    assert {kind for kind, _ in left} <= {"Secret", "PersistentVolumeClaim", "ConfigMap"}, left
    assert ("PersistentVolumeClaim", "agent-momentum-state") in left
    assert ("Secret", "redis-credentials") in left
    assert {name for kind, name in left if kind == "ConfigMap"} <= {"kube-root-ca.crt"}


def test_no_secret_value_reaches_the_output_even_at_vvv(platform: str, local_clusters: LocalClusters) -> None:
    """AWX keeps every task's output in its job events: cleanup reads Secrets for their names and
    labels only, so neither their base64 data nor the decoded values may appear, at -vvv and --diff."""
    import base64

    secrets = json.loads(local_clusters.kubectl("local-primary", "-n", platform, "get", "secrets", "-o", "json").stdout)
    # The secret values (passwords, keys, tokens), not the identities beside them (username, database).
    secret_keys = ("password", "api_key", "api_secret", "bot_token", "admin-password")
    encoded = {value for item in secrets["items"] for key, value in (item.get("data") or {}).items()
               if key in secret_keys and len(value) >= 8}
    decoded = {base64.b64decode(value).decode(errors="replace") for value in encoded}
    assert encoded, "the platform Secrets should hold data for this test to mean anything"

    result = run_playbook("cleanup.yml", limit="local-primary", check=True, diff=True, verbosity=3,
                          json_output=False,
                          extra_vars=platform_vars(platform, trading_agents=REMAINING, cleanup_scope="teardown"))
    assert result.rc == 0, result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert "KEEP (data) Secret" in output  # the Secrets were read and reported by name
    leaked = sorted(value[:6] + "..." for value in encoded | decoded if value in output)
    assert not leaked, f"secret values in cleanup's output: {leaked}"
