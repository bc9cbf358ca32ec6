"""Pure parts of the benchmarks (no processes, no network): the generated ensembles and
inventories, parsing of counters, ratios against the targets, and the README table.

bench/run.py does the running; tests/unit/test_bench_lib.py tests this module.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Seed 000's table: share of the ensemble per tier.
TIER_SHARES: dict[str, float] = {"lightweight": 0.20, "standard": 0.60, "heavy": 0.15, "accelerated": 0.05}
STRATEGIES = ("momentum", "sentiment", "pairs", "breakout", "scalping", "volatility")

# Loopback ports of the bench's own cluster and servers. The cluster role derives its ports
# from the base (+247 kwok, +257, +259, +379, +380, +443); the servers sit between them.
PORTS: dict[str, int] = {
    "cluster_port_base": 23000,
    "redis": 23637,
    "postgres": 23532,
    "prometheus": 23090,
    "alertmanager": 23093,
    "workload": 23800,
}
CLUSTER_PORT_OFFSETS = (247, 257, 259, 379, 380, 443)

# Node pools large enough for 300 agents (one namespace at a time), same labels and taints
# as the cluster role's defaults so the tiers' selectors and tolerations match.
NODE_POOLS: list[dict[str, Any]] = [
    {"name": "general", "count": 10, "cpu": "16", "memory": "64Gi", "pods": 110,
     "labels": {"cloud.google.com/gke-nodepool": "general", "sapphire.io/pool": "general"}, "taints": []},
    {"name": "heavy", "count": 4, "cpu": "16", "memory": "96Gi", "pods": 110,
     "labels": {"cloud.google.com/gke-nodepool": "heavy", "sapphire.io/pool": "heavy"}, "taints": []},
    {"name": "tpu", "count": 18, "cpu": "24", "memory": "96Gi", "pods": 110,
     "accelerator": {"resource": "google.com/tpu", "count": 4},
     "labels": {"cloud.google.com/gke-nodepool": "tpu-v5e",
                "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                "cloud.google.com/gke-tpu-topology": "2x2", "sapphire.io/pool": "tpu"},
     "taints": [{"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}]},
]

# A quota that holds 300 agents of the mix above plus the coordinator.
NAMESPACE_QUOTA: dict[str, str] = {
    "requests.cpu": "200", "requests.memory": "400Gi", "limits.cpu": "400", "limits.memory": "800Gi",
    "pods": "600", "persistentvolumeclaims": "20", "requests.storage": "500Gi", "requests.google.com/tpu": "96",
}

SECRET_NAMES = ("redis_password", "redis_agent_password", "redis_replication_password", "redis_monitor_password",
                "postgres_password", "postgres_replication_password", "postgres_agent_password",
                "postgres_coordinator_password", "postgres_monitor_password", "sapphire_exchange_api_key",
                "sapphire_exchange_api_secret", "sapphire_telegram_bot_token", "grafana_admin_password")

# Targets of issue 6, reported (never asserted).
TARGETS = {
    "deploy_vs_kubectl_max": 1.0,
    "deploy_growth_max": 3.0,
    "redeploy_share_max": 1 / 3,
    "validate_small_max_seconds": 5.0,
    "validate_growth_max": 2.0,
    "stop_halt_flag_max_seconds": 1.0,
    "stop_scaled_max_seconds": 5.0,
}


def tier_counts(size: int) -> dict[str, int]:
    """Agents per tier for an ensemble of `size`: the seed's shares by largest remainder,
    with at least one agent per tier once the ensemble has room for every tier."""
    if size < 0:
        raise ValueError("the ensemble size must be >= 0")
    exact = {tier: share * size for tier, share in TIER_SHARES.items()}
    counts = {tier: math.floor(value) for tier, value in exact.items()}
    by_remainder = sorted(TIER_SHARES, key=lambda tier: (-(exact[tier] - counts[tier]), list(TIER_SHARES).index(tier)))
    for tier in by_remainder[: size - sum(counts.values())]:
        counts[tier] += 1
    if size >= len(TIER_SHARES):
        for tier in TIER_SHARES:
            while counts[tier] == 0:
                donor = max(counts, key=lambda name: (counts[name], -list(TIER_SHARES).index(name)))
                counts[donor] -= 1
                counts[tier] += 1
    return counts


def ensemble(size: int) -> list[dict[str, Any]]:
    """trading_agents for an ensemble of `size`: tiers per tier_counts, strategies in turn,
    names `<strategy>-<nnn>` (DNS-1123), one replica each."""
    agents: list[dict[str, Any]] = []
    for tier, count in tier_counts(size).items():
        for _ in range(count):
            index = len(agents)
            strategy = STRATEGIES[index % len(STRATEGIES)]
            agents.append({"name": f"{strategy}-{index:03d}", "strategy": strategy, "tier": tier, "replicas": 1})
    return agents


def namespace_for(size: int, method: str) -> str:
    """The empty namespace one measurement deploys into (method: ansible | kubectl)."""
    return f"bench-{method}-{size}"


def inventory(size: int, local_dir: str, secrets: dict[str, str], agent_tiers: dict[str, Any] | None = None,
              release: str = "2026.11.0") -> dict[str, Any]:
    """The bench inventory for one ensemble size: the cluster host `bench` (kwok, its own port
    base and state under local_dir), host-mode Redis, PostgreSQL and Prometheus on the bench's
    own ports, the synthetic workload, and throw-away secrets (never the vault). agent_tiers,
    when given, are the local default's (inventories/local/group_vars/all/main.yml)."""
    missing = [name for name in SECRET_NAMES if not secrets.get(name)]
    if missing:
        raise ValueError(f"bench secrets missing: {', '.join(missing)}")
    platform: dict[str, Any] = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "sapphire_environment": "local",
        "sapphire_namespace": namespace_for(size, "ansible"),
        "sapphire_release": release,
        "sapphire_image_registry": "registry.sapphire.internal/sapphire",
        "sapphire_local_dir": local_dir,
        "redis_mode": "host",
        "postgres_mode": "host",
        "monitoring_mode": "host",
        "postgres_user": "sapphire",
        "postgres_database": "sapphire",
        "postgres_replication_user": "replicator",
        "grafana_admin_user": "admin",
        # The login of each purpose (as inventories/local names them).
        "redis_agent_user": "sapphire-agent",
        "redis_replication_user": "sapphire-replica",
        "redis_monitor_user": "sapphire-monitor",
        "postgres_agent_user": "sapphire_agent",
        "postgres_coordinator_user": "sapphire_coordinator",
        "postgres_monitor_user": "sapphire_monitor",
        "trading_agents": ensemble(size),
        "workload_enabled": True,
        "workload_coordinator_port": PORTS["workload"],
        "validate_report_dir": f"{local_dir}/reports/{size}",
    }
    if agent_tiers:
        platform["agent_tiers"] = agent_tiers
    platform.update({name: secrets[name] for name in SECRET_NAMES})
    cluster_vars = {
        "cluster_provider": "kwok",
        "cluster_port_base": PORTS["cluster_port_base"],
        "cluster_node_pools": NODE_POOLS,
        "k8s_kubeconfig": "{{ sapphire_local_dir }}/clusters/{{ inventory_hostname }}/kubeconfig",
        "k8s_context": "{{ inventory_hostname }}",
        "sapphire_region": "primary",
        "namespace_quota": NAMESPACE_QUOTA,
    }
    return {"all": {
        "children": {
            "clusters": {"children": {"primary": {"hosts": {"bench": cluster_vars}}}},
            "redis_hosts": {"hosts": {"bench-redis": {
                "redis_port": PORTS["redis"], "redis_replication_role": "primary", "sapphire_region": "primary"}}},
            "postgres_hosts": {"hosts": {"bench-postgres": {
                "postgres_port": PORTS["postgres"], "postgres_replication_role": "primary",
                "sapphire_region": "primary"}}},
            "monitoring_hosts": {"hosts": {"bench-monitoring": {
                "prometheus_port": PORTS["prometheus"], "alertmanager_port": PORTS["alertmanager"],
                "sapphire_region": "primary"}}},
        },
        "vars": platform,
    }}


def bench_ports() -> list[int]:
    """Every loopback port the bench listens on (checked free before it starts anything)."""
    base = PORTS["cluster_port_base"]
    return sorted([base + offset for offset in CLUSTER_PORT_OFFSETS]
                  + [port for name, port in PORTS.items() if name != "cluster_port_base"])


_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)\s*$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_requests(metrics_text: str) -> dict[str, float]:
    """apiserver_request_total summed per verb from a /metrics page (plus 'total')."""
    per_verb: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group("labels")))
        verb = labels.get("verb", "UNKNOWN")
        per_verb[verb] = per_verb.get(verb, 0.0) + float(match.group("value"))
    per_verb["total"] = sum(value for verb, value in per_verb.items() if verb != "total")
    return per_verb


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """after - before per key (keys of either); counters only grow, so a negative delta means a restart."""
    delta = {key: round(after.get(key, 0.0) - before.get(key, 0.0)) for key in set(before) | set(after)}
    if any(value < 0 for value in delta.values()):
        raise ValueError("apiserver_request_total went down between two reads: the API server restarted")
    return dict(sorted(delta.items()))


_KUBECTL_REQUEST = re.compile(r'\b(GET|POST|PUT|PATCH|DELETE) https?://\S+ \d{3} ')


def kubectl_requests(log_text: str) -> int:
    """Requests kubectl made, from its -v=6 log (one 'VERB url code' line per request)."""
    return sum(1 for line in log_text.splitlines() if _KUBECTL_REQUEST.search(line))


def count_objects(documents: list[dict[str, Any]]) -> int:
    """Objects in a list of manifests (a v1 List counts its items)."""
    total = 0
    for document in documents:
        if document.get("kind") == "List":
            total += len(document.get("items", []))
        elif document:
            total += 1
    return total


def task_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Counts from one bench_stats document: tasks started, task executions on hosts,
    changed results, failures and the objects kubernetes.core.k8s reported applying."""
    tasks = stats.get("tasks", [])
    return {
        "tasks": len(tasks),
        "task_runs": sum(task["ok"] + task["failed"] for task in tasks),
        "changed": sum(task["changed"] for task in tasks),
        "failed": sum(task["failed"] for task in tasks),
        "k8s_objects_reported": sum(task.get("k8s_objects", 0) for task in tasks),
    }


def seconds_by_play(stats: dict[str, Any]) -> dict[str, float]:
    """Wall time per play (sum of its tasks), to tell the servers' plays from the cluster's."""
    plays: dict[str, float] = {}
    for task in stats.get("tasks", []):
        name = task.get("play") or "?"
        plays[name] = round(plays.get(name, 0.0) + task["seconds"], 2)
    return plays


PLAY_GROUPS = (("cluster", "Ensure the Kubernetes clusters"), ("host-mode servers", "Ensure the host-mode"),
               ("platform", "Deploy the platform to each cluster"))


def deploy_breakdown(by_play: dict[str, float]) -> dict[str, float]:
    """A deploy's seconds in the parts that behave differently: the cluster play and the host-mode
    server plays (a fixed cost whatever the ensemble), the platform play (the Kubernetes objects,
    the part kubectl does) and the rest (DR state, preflight, workload)."""
    parts = {name: 0.0 for name, _ in PLAY_GROUPS} | {"other": 0.0}
    for play, seconds in by_play.items():
        group = next((name for name, prefix in PLAY_GROUPS if play.startswith(prefix)), "other")
        parts[group] = round(parts[group] + seconds, 2)
    return parts


def slowest_tasks(stats: dict[str, Any], limit: int = 8) -> list[dict[str, Any]]:
    """The tasks that took longest, with their role, for the report."""
    tasks = sorted(stats.get("tasks", []), key=lambda task: task["seconds"], reverse=True)
    return [{"name": task["name"], "role": task["role"], "seconds": task["seconds"]} for task in tasks[:limit]]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def evaluate(rows: list[dict[str, Any]], fresh: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ratios per size and each issue-6 target with where we stand (met true/false, or None
    when the run lacks the sizes a target needs).

    fresh: the bench's deploy from nothing ({size, seconds, from_nothing}; bench/run.py's bootstrap: `cluster.yml`
    then `deploy.yml` on a machine without the bench's clusters, servers or their state, as `make deploy` after
    `make purge`). The no-op target compares the re-deploy of that size with it; a run that did not start from
    nothing (--keep) leaves the target open. Each row's re-deploy / deploy (into an empty namespace, everything
    else already converged) is kept as a ratio of its own."""
    by_size = {row["size"]: row for row in rows}
    for row in rows:
        row["ratios"] = {
            "deploy_vs_kubectl": _ratio(row["deploy"]["seconds"], row["kubectl"]["seconds"]),
            "redeploy_vs_deploy": _ratio(row["redeploy"]["seconds"], row["deploy"]["seconds"]),
        }
    small, large = (min(by_size), max(by_size)) if by_size else (None, None)
    targets: list[dict[str, Any]] = []

    def add(name: str, observed: float | None, limit: float, text: str, extra: bool = True,
            strict: bool = False) -> None:
        """strict: the target reads "< limit", so an observation at the limit (as rounded) is a miss."""
        met = None if observed is None else ((observed < limit if strict else observed <= limit) and extra)
        targets.append({"target": name, "observed": observed, "limit": round(limit, 3), "met": met, "text": text})

    top = by_size.get(large) if large is not None else None
    add("deploy_vs_kubectl", top["ratios"]["deploy_vs_kubectl"] if top else None, TARGETS["deploy_vs_kubectl_max"],
        f"deploy({large}) / kubectl apply({large}) <= 1.0")
    growth = (_ratio(by_size[large]["deploy"]["seconds"], by_size[small]["deploy"]["seconds"])
              if large != small else None)
    flat = (by_size[large]["deploy"]["tasks"] == by_size[small]["deploy"]["tasks"]) if large != small else True
    add("deploy_growth", growth, TARGETS["deploy_growth_max"],
        f"deploy({large}) / deploy({small}) <= 3 and a flat task count", flat)
    all_zero = all(row["redeploy"]["changed"] == 0 for row in rows)
    fresh_row = by_size.get((fresh or {}).get("size"))
    share = (_ratio(fresh_row["redeploy"]["seconds"], fresh["seconds"])
             if fresh and fresh.get("from_nothing") and fresh_row else None)
    add("redeploy", share, TARGETS["redeploy_share_max"],
        f"no-op re-deploy({(fresh or {}).get('size', small)}) / fresh deploy from nothing (cluster.yml + deploy.yml) "
        "<= 1/3, changed=0 at every size", all_zero)
    add("validate_small", by_size[small]["validate"]["seconds"] if rows else None,
        TARGETS["validate_small_max_seconds"], f"validate({small}) < 5 s",
        all(row["validate"]["healthy"] for row in rows), strict=True)
    vgrowth = (_ratio(by_size[large]["validate"]["seconds"], by_size[small]["validate"]["seconds"])
               if large != small else None)
    add("validate_growth", vgrowth, TARGETS["validate_growth_max"], f"validate({large}) / validate({small}) <= 2")
    # The kill switch, timed from outside (bench/run.py's watcher) from the playbook's start, the worst size counts.
    stops = [row.get("emergency_stop") or {} for row in rows]

    def worst(key: str) -> float | None:
        values = [stop.get(key) for stop in stops]
        return None if not values or None in values else max(values)

    add("stop_halt_flag", worst("halt_flag_seconds"), TARGETS["stop_halt_flag_max_seconds"],
        "emergency-stop: halt flag set < 1 s after the playbook's first task", strict=True)
    add("stop_scaled", worst("scaled_seconds"), TARGETS["stop_scaled_max_seconds"],
        "emergency-stop: every agent asked to scale to zero < 5 s from the start", strict=True)
    return {"targets": targets}


def markdown(results: dict[str, Any]) -> str:
    """The README block (between the bench markers) for one results document."""
    machine = results["machine"]
    lines = [
        f"Measured by `{results['command']}` on {results['date']} ({machine['cpu_model']}, {machine['nproc']} CPUs, "
        f"{machine['memory_gib']} GiB, load average {_load(machine)} at the start; "
        f"ansible-core {machine['versions']['ansible_core']}, kubernetes.core "
        f"{machine['versions']['kubernetes_core']}, kubectl {machine['versions']['kubectl']}; one kwok cluster, "
        "host-mode Redis/PostgreSQL/Prometheus and the synthetic workload). Seconds of wall-clock time; "
        f"results in `{results['results_file']}`, plot `{results['plot_file']}`.",
        "",
        "| agents | objects | deploy s (tasks) | kubectl apply s | deploy / kubectl | re-deploy s (changed) "
        "| re-deploy / deploy | validate s (checks) | API requests deploy / kubectl |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['size']} | {row['objects']} | {row['deploy']['seconds']:.1f} ({row['deploy']['tasks']}) "
            f"| {row['kubectl']['seconds']:.1f} | {_fmt(row['ratios']['deploy_vs_kubectl'])} "
            f"| {row['redeploy']['seconds']:.1f} ({row['redeploy']['changed']}) "
            f"| {_fmt(row['ratios'].get('redeploy_vs_deploy'))} "
            f"| {row['validate']['seconds']:.1f} ({row['validate']['checks']}) "
            f"| {_fmt_int(row['deploy'].get('api_requests'))} / {_fmt_int(row['kubectl'].get('api_requests'))} |")
    fresh = results.get("fresh") or {}
    if fresh.get("seconds") is not None:
        origin = ("from nothing: no bench cluster, server or state before it" if fresh.get("from_nothing")
                  else "NOT from nothing: the bench's cluster and servers were kept from an earlier run")
        lines += ["", f"Fresh deploy of {fresh['size']} agents ({origin}): {fresh['seconds']:.1f} s "
                  f"(`cluster.yml` {fresh['cluster_seconds']:.1f} s + `deploy.yml` {fresh['deploy_seconds']:.1f} s, "
                  "as `make deploy` after `make purge`). The deploy column above is a deploy into an empty namespace "
                  "with the cluster and servers already converged."]
    lines += ["", "Where a deploy's task time goes, seconds (deploy / no-op re-deploy), from the "
              "per-task timings:", "",
              "| agents | cluster play | host-mode server plays "
              "| platform play (namespace, data services, monitoring, agents, wait) | other plays |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for row in results["rows"]:
        fresh = deploy_breakdown(row["deploy"].get("seconds_by_play", {}))
        again = deploy_breakdown(row["redeploy"].get("seconds_by_play", {}))
        cells = " | ".join(f"{fresh[name]:.1f} / {again[name]:.1f}" for name in ("cluster", "host-mode servers",
                                                                                  "platform", "other"))
        lines.append(f"| {row['size']} | {cells} |")
    if any(row.get("emergency_stop") for row in results["rows"]):
        lines += ["", "emergency-stop.yml, seconds from the start of ansible-playbook (a watcher polls Redis and the "
                  "API every 20 ms); the halt flag also from the playbook's first task:", "",
                  "| agents | first task | halt flag set (after the first task) | every agent at 0 replicas "
                  "| no agent pod left | playbook |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in results["rows"]:
            stop = row.get("emergency_stop") or {}
            lines.append(f"| {row['size']} | {_fmt(stop.get('first_task_seconds'))} "
                         f"| {_fmt(stop.get('halt_flag_from_start_seconds'))} ({_fmt(stop.get('halt_flag_seconds'))}) "
                         f"| {_fmt(stop.get('scaled_seconds'))} | {_fmt(stop.get('no_pod_seconds'))} "
                         f"| {_fmt(stop.get('seconds'))} |")
    lines += ["", "| target | observed | limit | met |", "| --- | ---: | ---: | --- |"]
    for target in results["evaluation"]["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        lines.append(f"| {target['text']} | {_fmt(target['observed'])} | {_fmt(target['limit'])} | {met} |")
    return "\n".join(lines)


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_at_start")
    return " / ".join(f"{value:.2f}" for value in load) if load else "unknown"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fmt_int(value: int | None) -> str:
    return "n/a" if value is None else str(value)


START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"


def replace_between_markers(text: str, block: str) -> str:
    """`text` with everything between the bench markers replaced by `block`; the markers and
    everything outside them stay. Raises ValueError when the markers are missing or out of order."""
    start = text.find(START_MARKER)
    end = text.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README.md needs {START_MARKER} followed by {END_MARKER}")
    head = text[: start + len(START_MARKER)]
    return f"{head}\n{block.strip()}\n{text[end:]}"
