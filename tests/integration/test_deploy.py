"""deploy.yml on the local clusters: bad input refused before any write, idempotence, check mode,
Pod Security admission, and a task count that does not grow with the ensemble."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sapphire_testlib import REPO_ROOT, LocalClusters, run_playbook, wait_for

pytestmark = [pytest.mark.cluster]

CLUSTER = "local-primary"
AGENTS_DEFAULTS = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "defaults" / "main.yml").read_text())
SEED_AGENTS = [
    {"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 2},
    {"name": "sentiment", "strategy": "sentiment", "tier": "heavy", "replicas": 1},
    {"name": "pairs", "strategy": "pairs", "tier": "standard", "replicas": 1},
    {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1},
    {"name": "scalping", "strategy": "scalping", "tier": "accelerated", "replicas": 1},
    {"name": "volatility", "strategy": "volatility", "tier": "standard", "replicas": 1},
]


def deploy(namespace: str, **extra: Any):
    extra_vars = {"sapphire_namespace": namespace, "workload_enabled": False, **extra}
    return run_playbook("deploy.yml", limit=CLUSTER, extra_vars=extra_vars,
                        check=extra_vars.pop("_check", False), diff=extra_vars.pop("_diff", False))


def namespace_exists(clusters: LocalClusters, name: str) -> bool:
    return clusters.kubectl(CLUSTER, "get", "namespace", name, check=False).returncode == 0


def agents(**change: Any) -> list[dict[str, Any]]:
    return [dict(SEED_AGENTS[0], **change), *SEED_AGENTS[1:]]


BAD_INPUT = [
    ("unknown tier", {"trading_agents": agents(tier="mega")},
     "trading_agents[0] (momentum).tier 'mega' is not one of agent_tiers"),
    ("name not DNS-1123", {"trading_agents": agents(name="Momentum_1")}, "is not a DNS-1123 label"),
    ("name too long", {"trading_agents": agents(name="m" * 64)}, "is 64 characters long"),
    ("duplicate names", {"trading_agents": [*SEED_AGENTS, SEED_AGENTS[2]]}, "duplicates trading_agents[2]"),
    ("negative replicas", {"trading_agents": agents(replicas=-1)}, "replicas '-1' must be a whole number >= 0"),
    ("replicas not an integer", {"trading_agents": agents(replicas="two")},
     "replicas 'two' must be a whole number"),
    ("requests above limits", {"agent_tiers_override": "standard-cpu"},
     "agent_tiers.standard.cpu 2 is above its limit"),
    ("malformed quantity", {"agent_tiers_override": "heavy-memory"},
     "agent_tiers.heavy.memory '1.5 gigs' is not a Kubernetes quantity"),
    ("image tag latest", {"sapphire_release": "latest"}, "is not pinned: set sapphire_release"),
    ("image without tag", {"agents_image": "registry.example/agent"},
     "agents_image: 'registry.example/agent' is not pinned"),
    ("image digest malformed", {"agents_coordinator_image": "registry.example/coordinator@sha256:abc"},
     "agents_coordinator_image: 'registry.example/coordinator@sha256:abc' has a malformed digest"),
    ("image by tag where digests are required (a survey's string)", {"sapphire_image_digests_required": "yes"},
     "agents_image: 'registry.sapphire.internal/sapphire/agent:2026.11.0' is pinned by tag only"),
    ("namespace default", {"sapphire_namespace": "default"}, "sapphire_namespace 'default' must be"),
    ("namespace kube-system", {"sapphire_namespace": "kube-system"}, "sapphire_namespace 'kube-system' must be"),
    ("missing secret", {"vault_exchange_api_key": ""},
     "sapphire_exchange_api_key is empty or undefined"),
    ("quota too small", {"namespace_quota": {"requests.cpu": "2", "requests.memory": "4Gi"}},
     "namespace_quota is smaller than what the platform needs"),
    ("no accelerator nodes", {"cluster_node_pools_without_tpu": True}, "Tier 'accelerated' needs 4 google.com/tpu"),
    ("network policy range not a CIDR", {"namespace_api_ingress_cidrs": ["10.0.0.0/33"]},
     "namespace_api_ingress_cidrs: '10.0.0.0/33' is not a CIDR"),
    ("network policy namespace not a namespace name", {"namespace_api_ingress_namespaces": ["Monitoring"]},
     "namespace_api_ingress_namespaces: 'Monitoring' is not a namespace name"),
    ("DNS pod label value with a space", {"namespace_dns_pod_labels": {"k8s-app": "kube dns"}},
     "namespace_dns_pod_labels: the value 'kube dns' of 'k8s-app' is not a label value"),
    ("liveness path without its leading slash", {"agents_liveness_path": "livez"},
     "agents_liveness_path: 'livez' must be an HTTP path starting with /"),
    # Checked by the parsers the canary analysis, the trading gate and the workload run with, before the first write.
    ("canary metric with a condition that is not one", {"agents_canary_analysis_metric": {"success_condition": "low"}},
     "agents_canary_analysis.metrics[0].success_condition (error-rate) must be an operator"),
    ("market hours with a clock that is not HH:MM", {"agents_gate_market_hours": [{"start": "9:30", "end": "16:00"}]},
     "agents_gate_market_hours[0].start must be a time HH:MM (24 h), got '9:30'"),
    ("workload misbehaviour with an unknown field (a -e string)",
     {"workload_enabled": True, "workload_misbehave": '{"release": "r2", "errors": 0.5}'},
     "workload_misbehave: unknown field(s) errors"),
]


def _bad_input_vars(extra: dict[str, Any], tiers: dict[str, Any], pools: list[dict[str, Any]]) -> dict[str, Any]:
    extra = dict(extra)
    override = extra.pop("agent_tiers_override", None)
    if override:
        tier, field = override.split("-")
        tiers = json.loads(json.dumps(tiers))
        tiers[tier][field] = "2" if field == "cpu" else "1.5 gigs"
        extra["agent_tiers"] = tiers
    if extra.pop("cluster_node_pools_without_tpu", False):
        extra["cluster_node_pools"] = [pool for pool in pools if not pool.get("accelerator")]
    metric = extra.pop("agents_canary_analysis_metric", None)
    if metric:  # the shipped analysis with its first metric changed
        analysis = json.loads(json.dumps(AGENTS_DEFAULTS["agents_canary_analysis"]))
        analysis["metrics"][0].update(metric)
        extra["agents_canary_analysis"] = analysis
    return extra


@pytest.fixture(scope="module")
def platform_defaults(repo_root) -> dict[str, Any]:
    import yaml

    tiers = yaml.safe_load((repo_root / "inventories" / "common" / "agent_tiers.yml").read_text())["agent_tiers"]
    cluster_defaults = repo_root / "roles" / "cluster" / "defaults" / "main.yml"
    pools = yaml.safe_load(cluster_defaults.read_text())["cluster_node_pools"]
    return {"tiers": tiers, "pools": pools}


@pytest.mark.parametrize(("case", "extra", "message"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_refused_before_anything_is_written(local_clusters: LocalClusters, platform_defaults,
                                                         case: str, extra: dict[str, Any], message: str) -> None:
    namespace = f"t-bad-{uuid.uuid4().hex[:6]}"
    extra_vars = _bad_input_vars(extra, platform_defaults["tiers"], platform_defaults["pools"])
    extra_vars.setdefault("sapphire_namespace", namespace)
    result = run_playbook("deploy.yml", limit=CLUSTER, json_output=False,
                          extra_vars={"workload_enabled": False, **extra_vars})
    output = result.stdout + result.stderr
    assert result.rc != 0, f"{case}: deploy accepted bad input"
    assert message in " ".join(output.split()), f"{case}: message not found in output:\n{output[-3000:]}"
    assert "PLAY [Ensure the Kubernetes clusters]" not in output, f"{case}: went past the preflight"
    assert not namespace_exists(local_clusters, namespace), f"{case}: something was written"


def test_a_host_mode_server_that_fails_to_converge_stops_the_deploy_before_the_platform(
        local_clusters: LocalClusters) -> None:
    """The host-mode servers converge side by side (free strategy, which does not stop the other hosts on a failure):
    the platform play must still refuse to start while one of them failed."""
    namespace = f"t-host-{uuid.uuid4().hex[:6]}"
    result = run_playbook("deploy.yml", limit=f"{CLUSTER},redis-primary,redis-dr", json_output=False,
                          extra_vars={"sapphire_namespace": namespace, "workload_enabled": False,
                                      "redis_maxmemory": "lots"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.rc != 0
    assert "redis_maxmemory = 'lots' is not a Redis memory size" in output
    named = re.search(r"The host-mode server\(s\) (.+?) did not converge", output)
    assert named, output[-3000:]
    assert named.group(1) == "redis-primary, redis-dr", output[-3000:]
    assert not namespace_exists(local_clusters, namespace), "the platform play ran after a failed server"


@pytest.fixture(scope="module")
def deployed(local_clusters: LocalClusters):
    """The platform deployed once into a throw-away namespace of local-primary."""
    namespace = f"t-deploy-{uuid.uuid4().hex[:6]}"
    first = deploy(namespace)
    assert first.rc == 0, first.explain()
    yield namespace, first
    local_clusters.kubectl(CLUSTER, "delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.slow
def test_second_deploy_changes_nothing(deployed) -> None:
    namespace, first = deployed
    assert first.changed > 0
    second = deploy(namespace)
    assert second.rc == 0, second.explain()
    assert second.changed == 0, second.changed_tasks()


NAMESPACE_APPLY = ("namespace : Apply the namespace, quota, limits, network policies, accounts and priority classes "
                   "that drifted")


@pytest.mark.slow
def test_a_deploy_writes_only_the_objects_that_drifted_and_puts_them_back(local_clusters: LocalClusters,
                                                                           deployed) -> None:
    """The namespace's objects are read and compared before any write: a converged namespace gets no apply at all,
    and a deleted quota, an opened network policy and a changed Secret are put back, and only they are applied."""
    namespace, _ = deployed
    kubectl = functools.partial(local_clusters.kubectl, CLUSTER, "-n", namespace)
    quiet = deploy(namespace)
    assert quiet.rc == 0, quiet.explain()
    assert quiet.task_results(NAMESPACE_APPLY)[CLUSTER]["drifted"] == []

    kubectl("delete", "resourcequota", "production-trading-quota")
    kubectl("patch", "networkpolicy", "default-deny", "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/policyTypes", "value": ["Ingress"]}]')
    kubectl("patch", "secret", "redis-credentials", "--type=merge", "-p", '{"data": {"password": "Y2hhbmdlZA=="}}')
    repaired = deploy(namespace)
    assert repaired.rc == 0, repaired.explain()
    assert repaired.task_results(NAMESPACE_APPLY)[CLUSTER]["drifted"] == [
        f"ResourceQuota/{namespace}/production-trading-quota", f"NetworkPolicy/{namespace}/default-deny"]
    assert "namespace : Apply the platform Secrets that drifted (server-side, no last-applied annotation, no output)" \
        in repaired.changed_tasks()
    policy = json.loads(kubectl("get", "networkpolicy", "default-deny", "-o", "json").stdout)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert kubectl("get", "resourcequota", "production-trading-quota", check=False).returncode == 0
    secret = json.loads(kubectl("get", "secret", "redis-credentials", "-o", "json").stdout)
    assert secret["data"]["password"] != "Y2hhbmdlZA=="
    assert deploy(namespace).changed == 0


@pytest.mark.slow
def test_every_workload_is_admitted_under_pod_security_restricted(local_clusters: LocalClusters, deployed) -> None:
    namespace, _ = deployed
    ns = json.loads(local_clusters.kubectl(CLUSTER, "get", "namespace", namespace, "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    listing = local_clusters.kubectl(CLUSTER, "-n", namespace, "get", "rs", "-o", "json").stdout
    replicasets = json.loads(listing)["items"]
    failures = [rs["metadata"]["name"] for rs in replicasets
                for cond in rs["status"].get("conditions", []) if cond["type"] == "ReplicaFailure"]
    assert failures == []
    pods = json.loads(local_clusters.kubectl(CLUSTER, "-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    by_agent: dict[str, int] = {}
    for pod in pods:
        agent = pod["metadata"]["labels"].get("sapphire.io/agent")
        if agent and pod["status"].get("phase") == "Running":
            by_agent[agent] = by_agent.get(agent, 0) + 1
    assert by_agent == {agent["name"]: agent["replicas"] for agent in SEED_AGENTS}
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert set(container["resources"]["requests"]) >= {"cpu", "memory"}
            assert not container["image"].endswith(":latest")
    scalping = next(pod for pod in pods if pod["metadata"]["labels"].get("sapphire.io/agent") == "scalping")
    node = json.loads(local_clusters.kubectl(CLUSTER, "get", "node", scalping["spec"]["nodeName"], "-o", "json").stdout)
    assert node["metadata"]["labels"]["sapphire.io/pool"] == "tpu"


@pytest.mark.slow
def test_the_pods_are_told_to_dial_the_services_and_verify_them_against_the_platform_ca(
        local_clusters: LocalClusters, deployed) -> None:
    """Host mode: the postgres and redis roles publish how the pods reach them (verify-full / TLS through the Services,
    the platform CA), and the pods the API server created from the Deployments read exactly that."""
    namespace, _ = deployed
    kubectl = functools.partial(local_clusters.kubectl, CLUSTER, "-n", namespace)
    ca = (REPO_ROOT / ".local" / "pki" / "ca.crt").read_text()
    clients = {service: json.loads(kubectl("get", "configmap", f"{service}-client", "-o", "json").stdout)["data"]
               for service in ("postgres", "redis")}
    assert clients["postgres"] == {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                                   "PGSSLROOTCERT": "/etc/sapphire/tls/postgres/ca.crt", "ca.crt": ca}
    assert clients["redis"] == {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "REDIS_TLS": "true",
                                "REDIS_CA_FILE": "/etc/sapphire/tls/redis/ca.crt", "ca.crt": ca}
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/component in (agent,coordinator)",
                              "-o", "json").stdout)["items"]
    assert {pod["metadata"]["labels"]["app.kubernetes.io/component"] for pod in pods} == {"agent", "coordinator"}
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert [source["configMapRef"]["name"] for source in container["envFrom"]] == [
            "postgres-client", "redis-client"], pod["metadata"]["name"]
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert mounts["data-ca"] == "/etc/sapphire/tls", pod["metadata"]["name"]


@pytest.mark.slow
def test_a_change_of_how_the_pods_reach_the_data_services_rolls_them(local_clusters: LocalClusters, deployed) -> None:
    """A pod reads postgres-client at its start: a deploy that changes it (here PostgreSQL without the platform TLS)
    changes the pod templates, so the Deployments roll; the next deploy puts both back."""
    namespace, _ = deployed
    kubectl = functools.partial(local_clusters.kubectl, CLUSTER, "-n", namespace)

    def seen() -> tuple[str, dict[str, str]]:
        client = json.loads(kubectl("get", "configmap", "postgres-client", "-o", "json").stdout)["data"]
        deployments = json.loads(kubectl("get", "deploy", "-l", "app.kubernetes.io/component in (agent,coordinator)",
                                         "-o", "json").stdout)["items"]
        annotations = {item["metadata"]["name"]: item["spec"]["template"]["metadata"]["annotations"].get(
            "sapphire.io/data-client-checksum", "") for item in deployments}
        return client["PGSSLMODE"], annotations

    mode, before = seen()
    assert mode == "verify-full" and "" not in before.values() and len(set(before.values())) == 1, before
    # The accelerated agent rolls too although its TPU pool has no room for a surge pod: its pods are replaced one at
    # a time (maxSurge 0).
    changed = deploy(namespace, postgres_tls=False)
    assert changed.rc == 0, changed.explain()
    mode, during = seen()
    assert mode == "prefer"
    rolled = {name for name, checksum in during.items() if checksum != before[name]}
    assert rolled == set(before), during
    restored = deploy(namespace)
    assert restored.rc == 0, restored.explain()
    assert seen() == ("verify-full", before)


@pytest.mark.slow
def test_check_mode_reports_the_change_and_writes_nothing(local_clusters: LocalClusters, deployed) -> None:
    namespace, _ = deployed

    def versions() -> dict[str, str]:
        """What a write would change: the generation where the kind has one (controllers keep writing the status of
        Deployments and the coordinator's HPA, which changes resourceVersion but not generation), else the version."""
        items = json.loads(local_clusters.kubectl(CLUSTER, "-n", namespace, "get", "deploy,cm,pdb,svc,hpa",
                                                  "-o", "json").stdout)["items"]
        return {f"{i['kind']}/{i['metadata']['name']}": f"generation {i['metadata']['generation']}"
                if "generation" in i["metadata"] else f"version {i['metadata']['resourceVersion']}" for i in items}

    def hpa_settled() -> bool:
        hpa = json.loads(local_clusters.kubectl(CLUSTER, "-n", namespace, "get", "hpa", "trading-coordinator",
                                                "-o", "json").stdout)
        status = hpa.get("status") or {}
        return (status.get("currentReplicas") == status.get("desiredReplicas") == hpa["spec"]["minReplicas"]
                and any(item["type"] == "ScalingActive" for item in status.get("conditions") or []))

    # The coordinator's HPA raises the Deployment to its minReplicas and records that in its status for a while after
    # a deploy: let it settle, so that a change seen below is the check run's doing.
    wait_for(hpa_settled, timeout=120, what="the coordinator's HPA to settle", interval=2)
    before = versions()
    result = deploy(namespace, trading_agents=agents(replicas=3), _check=True, _diff=True)
    assert result.rc == 0, result.explain()
    assert any("trading workloads" in name for name in result.changed_tasks()), result.changed_tasks()
    assert versions() == before
    deployment = json.loads(local_clusters.kubectl(CLUSTER, "-n", namespace, "get", "deploy", "agent-momentum",
                                                   "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2


@pytest.mark.slow
def test_task_count_does_not_grow_with_the_ensemble(local_clusters: LocalClusters, deployed) -> None:
    namespace, _ = deployed
    big = [{"name": f"agent-{i:03d}", "strategy": "momentum", "tier": ["lightweight", "standard", "heavy"][i % 3],
            "replicas": 1} for i in range(60)]
    large_quota = {"requests.cpu": "200", "requests.memory": "400Gi", "limits.cpu": "400", "limits.memory": "800Gi",
                   "pods": "500", "requests.google.com/tpu": "8"}
    pools = [{"name": "general", "count": 20, "cpu": "16", "memory": "64Gi", "pods": 110,
              "labels": {"sapphire.io/pool": "general"}},
             {"name": "heavy", "count": 10, "cpu": "16", "memory": "64Gi", "pods": 110,
              "labels": {"sapphire.io/pool": "heavy"}}]

    def task_count(ensemble: list[dict[str, Any]]) -> int:
        result = deploy(namespace, trading_agents=ensemble, namespace_quota=large_quota, cluster_node_pools=pools,
                        _check=True)
        assert result.rc == 0, result.explain()
        return sum(len(play["tasks"]) for play in result.plays)

    small = [agent for agent in SEED_AGENTS if agent["tier"] != "accelerated"]
    assert task_count(small) == task_count(big)


def test_a_full_converge_waits_for_the_wal_archivers_lock_instead_of_failing(local_clusters: LocalClusters) -> None:
    """pgBackRest's asynchronous archive-push holds the stanza's archive lock while it ships WAL. A converge of the
    primary that ran stanza-create in that moment failed the deploy (rc 50, "unable to acquire lock"). Here the lock is
    held until stanza-create has been refused once, then let go: the converge must go on and succeed."""
    ready = run_playbook("deploy.yml", limit="backup-store-local,postgres-primary", json_output=False)
    assert ready.rc == 0, (ready.stdout + ready.stderr)[-3000:]
    instance = REPO_ROOT / ".local" / "postgres" / "postgres-primary"
    lock_dir, log = instance / "pgbackrest" / "lock", instance / "log" / "sapphire-stanza-create.log"
    attempts_before = log.read_text().count("stanza-create command begin") if log.exists() else 0
    lock_path = lock_dir / "sapphire-archive.lock"
    owner = lock_dir.stat()
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    os.fchown(handle, owner.st_uid, owner.st_gid)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    refused = threading.Event()

    def release_after_the_first_refusal() -> None:
        def attempts() -> int:
            return log.read_text().count("stanza-create command begin") if log.exists() else 0

        try:
            wait_for(lambda: attempts() > attempts_before, timeout=600, what="a stanza-create attempt")
            refused.set()
        finally:
            Path(lock_path).unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)

    releaser = threading.Thread(target=release_after_the_first_refusal, daemon=True)
    releaser.start()
    result = run_playbook("deploy.yml", limit="postgres-primary", json_output=False,
                          extra_vars={"deploy_full_check": True})
    releaser.join(timeout=30)
    output = " ".join((result.stdout + result.stderr).split())
    assert refused.is_set(), "stanza-create did not run while the lock was held"
    assert result.rc == 0, output[-3000:]
    assert "FAILED - RETRYING: [postgres-primary]: Ensure the pgBackRest stanza exists" in output, output[-3000:]
