"""The pure parts of `make bench` (bench/benchlib.py): ensembles, inventories, counters, targets, README block."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]


benchlib = load_module("benchlib", "bench")
SECRETS = {name: f"test-{name}" for name in benchlib.SECRET_NAMES}


@pytest.mark.parametrize(("size", "expected"), [
    (6, {"lightweight": 1, "standard": 3, "heavy": 1, "accelerated": 1}),
    (60, {"lightweight": 12, "standard": 36, "heavy": 9, "accelerated": 3}),
    (300, {"lightweight": 60, "standard": 180, "heavy": 45, "accelerated": 15}),
    (7, {"lightweight": 2, "standard": 3, "heavy": 1, "accelerated": 1}),
    (2, {"lightweight": 1, "standard": 1, "heavy": 0, "accelerated": 0}),
])
def test_tier_counts_follow_seed_000_shares(size: int, expected: dict[str, int]) -> None:
    counts = benchlib.tier_counts(size)
    assert counts == expected
    assert sum(counts.values()) == size


def test_tier_counts_reject_a_negative_size() -> None:
    with pytest.raises(ValueError, match="size"):
        benchlib.tier_counts(-1)


@pytest.mark.parametrize("size", [6, 60, 300])
def test_ensemble_has_unique_dns_names_and_valid_tiers(size: int) -> None:
    agents = benchlib.ensemble(size)
    names = [agent["name"] for agent in agents]
    assert len(agents) == size
    assert len(set(names)) == size
    assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 55 for name in names)
    assert {agent["tier"] for agent in agents} == set(benchlib.TIER_SHARES)
    assert {agent["strategy"] for agent in agents} == set(benchlib.STRATEGIES)
    assert all(agent["replicas"] >= 1 for agent in agents)


def _quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_node_pools_and_quota_hold_300_agents_of_the_agents_role_tiers() -> None:
    """The generated inventory must not fail deploy's own capacity preflight at the largest size."""
    import yaml

    tiers = yaml.safe_load((REPO_ROOT / "inventories" / "common" / "agent_tiers.yml").read_text())["agent_tiers"]
    counts = benchlib.tier_counts(300)
    cpu = sum(_quantity(tiers[tier]["cpu"]) * count for tier, count in counts.items()) + 1.5
    memory = sum(_quantity(tiers[tier]["memory"]) * count for tier, count in counts.items()) + 3 * 2**29
    tpu = counts["accelerated"] * tiers["accelerated"]["accelerator"]["count"]
    quota = benchlib.NAMESPACE_QUOTA
    assert _quantity(quota["requests.cpu"]) >= cpu
    assert _quantity(quota["requests.memory"]) >= memory
    assert _quantity(quota["requests.google.com/tpu"]) >= tpu
    assert int(quota["pods"]) >= 300 + 3
    pools = {pool["name"]: pool for pool in benchlib.NODE_POOLS}
    assert pools["tpu"]["count"] * pools["tpu"]["accelerator"]["count"] >= tpu
    general_cpu = sum(_quantity(tiers[tier]["cpu"]) * counts[tier] for tier in ("lightweight", "standard"))
    assert pools["general"]["count"] * _quantity(pools["general"]["cpu"]) >= general_cpu + 1.5
    heavy_cpu = _quantity(tiers["heavy"]["cpu"]) * counts["heavy"]
    assert pools["heavy"]["count"] * _quantity(pools["heavy"]["cpu"]) >= heavy_cpu
    for tier in ("lightweight", "standard", "heavy", "accelerated"):
        selector = tiers[tier]["node_selector"]
        assert any(selector.items() <= pool["labels"].items() for pool in benchlib.NODE_POOLS), tier


def test_inventory_is_separate_from_the_local_default() -> None:
    document = benchlib.inventory(60, "/srv/bench/local", SECRETS)
    platform: dict[str, Any] = document["all"]["vars"]
    cluster = document["all"]["children"]["clusters"]["children"]["primary"]["hosts"]["bench"]
    assert platform["sapphire_local_dir"] == "/srv/bench/local"
    assert platform["sapphire_namespace"] == "bench-ansible-60"
    assert platform["sapphire_namespace"] != "trading-system"
    assert len(platform["trading_agents"]) == 60
    assert cluster["cluster_provider"] == "kwok"
    assert cluster["cluster_port_base"] not in (20000, 21000)
    ports = benchlib.bench_ports()
    local_default = {15432, 15433, 16379, 16380, 18000, 19090, 19093} | {
        base + offset for base in (20000, 21000) for offset in benchlib.CLUSTER_PORT_OFFSETS}
    assert not set(ports) & local_default
    assert len(ports) == len(set(ports)), "two bench services on one port"
    assert all(platform[name] == SECRETS[name] for name in benchlib.SECRET_NAMES)
    assert "vault_redis_password" not in str(document)


def test_inventory_gives_every_secret_the_deployed_roles_require() -> None:
    # A secret a role's spec requires (or a login name) the bench leaves out stops `make bench` at the preflight, as
    # the Redis ACL users' passwords once did. The bench has no backup store host: the backup_store role does not run.
    required = set()
    for role in ("namespace", "redis", "postgres", "monitoring", "agents", "accelerated", "workload"):
        specs = yaml.safe_load((REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        required |= {name for spec in specs["argument_specs"].values()
                     for name, option in (spec.get("options") or {}).items()
                     if option.get("required") and option.get("no_log")}
    # And every value of the platform's Secrets (the namespace role checks each before writing anything).
    namespace_vars = yaml.safe_load((REPO_ROOT / "roles" / "namespace" / "vars" / "main.yml").read_text())
    required |= {variable for keys in namespace_vars["__namespace_secrets"].values() for variable in keys.values()}
    platform = benchlib.inventory(6, "/srv/bench/local", SECRETS)["all"]["vars"]
    assert sorted(required - set(platform)) == []


def test_inventory_refuses_missing_secrets() -> None:
    with pytest.raises(ValueError, match="postgres_password"):
        benchlib.inventory(6, "/tmp/x", {**SECRETS, "postgres_password": ""})


_LABELS = 'code="200",component="apiserver",dry_run="",scope="resource",subresource="",version="v1"'
METRICS = "\n".join([
    "# HELP apiserver_request_total [STABLE] Counter of apiserver requests",
    "# TYPE apiserver_request_total counter",
    f'apiserver_request_total{{{_LABELS},group="apps",resource="deployments",verb="GET"}} 12',
    f'apiserver_request_total{{{_LABELS},group="apps",resource="deployments",verb="APPLY"}} 3',
    f'apiserver_request_total{{{_LABELS},group="",resource="pods",verb="LIST"}} 1e+01',
    'apiserver_request_duration_seconds_count{verb="GET"} 99',
])


def test_apiserver_requests_sum_per_verb_and_ignore_other_series() -> None:
    counts = benchlib.apiserver_requests(METRICS)
    assert counts == {"GET": 12.0, "APPLY": 3.0, "LIST": 10.0, "total": 25.0}


def test_counter_delta_and_restart_detection() -> None:
    assert benchlib.counter_delta({"GET": 1, "total": 1}, {"GET": 4, "PATCH": 2, "total": 7}) == {
        "GET": 3, "PATCH": 2, "total": 6}
    with pytest.raises(ValueError, match="restarted"):
        benchlib.counter_delta({"total": 10}, {"total": 3})


def test_kubectl_requests_counts_request_lines_of_v6_logs() -> None:
    text = "\n".join([
        'I0101 round_trippers.go:632] "Response" verb="GET" url="x"',
        "I0101 round_trippers.go:553] GET https://127.0.0.1:23443/api?timeout=32s 200 OK in 3 milliseconds",
        "I0101 round_trippers.go:553] PATCH https://127.0.0.1:23443/apis/apps/v1/namespaces/a/deployments/b"
        "?fieldManager=x 201 Created in 9 milliseconds",
        "deployment.apps/b serverside-applied",
    ])
    assert benchlib.kubectl_requests(text) == 2


def test_count_objects_expands_lists() -> None:
    documents = [{"kind": "List", "items": [{"kind": "Service"}, {"kind": "Secret"}]}, {"kind": "Namespace"}, {}]
    assert benchlib.count_objects(documents) == 3


def _row(size: int, deploy: float, redeploy: float, validate: float, kubectl: float, *, tasks: int = 100,
         changed: int = 0, healthy: bool = True, stop: tuple[float, float] | None = (0.8, 2.0)) -> dict[str, Any]:
    row = {"size": size, "objects": size * 2 + 40,
           "deploy": {"seconds": deploy, "tasks": tasks, "api_requests": 10 * size},
           "redeploy": {"seconds": redeploy, "changed": changed},
           "validate": {"seconds": validate, "checks": 30, "healthy": healthy},
           "kubectl": {"seconds": kubectl, "api_requests": 5 * size}}
    if stop:
        row["emergency_stop"] = {"halt_flag_seconds": stop[0], "scaled_seconds": stop[1], "no_pod_seconds": stop[1] + 1,
                                 "seconds": stop[1] + 2}
    return row


def _met(evaluation: dict[str, Any]) -> dict[str, bool | None]:
    return {target["target"]: target["met"] for target in evaluation["targets"]}


FRESH = {"size": 6, "seconds": 100.0, "from_nothing": True, "cluster_seconds": 30.0, "deploy_seconds": 70.0}


def test_evaluate_reports_every_target_met() -> None:
    rows = [_row(6, 20, 5, 3, 4), _row(60, 25, 6, 3.5, 10), _row(300, 40, 10, 4, 45)]
    evaluation = benchlib.evaluate(rows, FRESH)
    assert _met(evaluation) == {"deploy_vs_kubectl": True, "deploy_growth": True, "redeploy": True,
                                "validate_small": True, "validate_growth": True, "stop_halt_flag": True,
                                "stop_scaled": True}
    assert rows[2]["ratios"]["deploy_vs_kubectl"] == pytest.approx(40 / 45, abs=1e-3)
    assert rows[0]["ratios"]["redeploy_vs_deploy"] == pytest.approx(0.25)


def test_evaluate_reports_misses() -> None:
    rows = [_row(6, 10, 2, 6, 4, tasks=100), _row(300, 90, 40, 20, 30, tasks=120, changed=1, healthy=False,
                                                   stop=(1.5, 9.0))]
    met = _met(benchlib.evaluate(rows, {**FRESH, "seconds": 5.0}))
    assert met == {"deploy_vs_kubectl": False, "deploy_growth": False, "redeploy": False,
                   "validate_small": False, "validate_growth": False, "stop_halt_flag": False, "stop_scaled": False}


def test_the_no_op_is_compared_with_the_fresh_deploy_from_nothing_not_the_deploy_into_a_namespace() -> None:
    # The deploy into an empty namespace (20 s) costs little more than the no-op (15 s): 0.75 of it. The fresh deploy
    # from nothing (cluster, servers, platform: 100 s) is the one the target names.
    rows = [_row(6, 20, 15, 3, 4)]
    evaluation = benchlib.evaluate(rows, FRESH)
    target = next(item for item in evaluation["targets"] if item["target"] == "redeploy")
    assert target["observed"] == pytest.approx(0.15) and target["met"] is True
    assert rows[0]["ratios"]["redeploy_vs_deploy"] == pytest.approx(0.75)
    assert _met(benchlib.evaluate([_row(6, 20, 40, 3, 4)], FRESH))["redeploy"] is False
    assert _met(benchlib.evaluate([_row(6, 20, 15, 3, 4, changed=2)], FRESH))["redeploy"] is False


def test_a_fresh_deploy_that_was_not_from_nothing_leaves_the_no_op_target_open() -> None:
    assert _met(benchlib.evaluate([_row(6, 20, 5, 3, 4)], {**FRESH, "from_nothing": False}))["redeploy"] is None
    assert _met(benchlib.evaluate([_row(6, 20, 5, 3, 4)]))["redeploy"] is None


def test_a_run_without_the_stop_measured_leaves_its_targets_open() -> None:
    met = _met(benchlib.evaluate([_row(6, 20, 5, 3, 4, stop=None), _row(300, 40, 10, 4, 45)]))
    assert met["stop_halt_flag"] is None and met["stop_scaled"] is None


def test_evaluate_flags_a_growing_task_count_even_when_time_is_flat() -> None:
    rows = [_row(6, 20, 5, 3, 4, tasks=100), _row(300, 21, 5, 3, 40, tasks=400)]
    assert _met(benchlib.evaluate(rows))["deploy_growth"] is False


def test_evaluate_with_one_size_leaves_growth_targets_open() -> None:
    met = _met(benchlib.evaluate([_row(6, 20, 5, 3, 4)]))
    assert met["deploy_growth"] is None and met["validate_growth"] is None
    assert met["validate_small"] is True


def _results() -> dict[str, Any]:
    rows = [_row(6, 20, 5, 3, 4), _row(300, 40, 10, 4, 45)]
    return {"command": ".venv/bin/python bench/run.py", "date": "2026-01-01 00:00 UTC",
            "machine": {"cpu_model": "Test CPU", "nproc": 2, "memory_gib": 23.5,
                        "versions": {"ansible_core": "2.19.14", "kubernetes_core": "6.2.0", "kubectl": "v1.34.4"}},
            "fresh": FRESH, "rows": rows, "evaluation": benchlib.evaluate(rows, FRESH),
            "results_file": "bench/results/bench.json", "plot_file": "bench/results/bench.png"}


def test_markdown_table_has_a_row_per_size_and_the_command() -> None:
    block = benchlib.markdown(_results())
    assert "`.venv/bin/python bench/run.py`" in block
    assert "Test CPU, 2 CPUs" in block
    first_table = block.split("Where a deploy's task time goes")[0]
    rows = [line for line in first_table.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [line.split("|")[1].strip() for line in rows] == ["6", "300"]
    assert "| 0.89 |" in rows[1]  # deploy / kubectl at 300
    assert "| 0.25 |" in rows[1]  # re-deploy / deploy at 300
    assert "Fresh deploy of 6 agents (from nothing: no bench cluster, server or state before it): 100.0 s" in block


def test_replace_between_markers_keeps_the_rest_of_the_readme() -> None:
    readme = "# Title\n\nintro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n\n## After\ntext\n"
    updated = benchlib.replace_between_markers(readme, "NEW")
    assert updated == "# Title\n\nintro\n<!-- bench:start -->\nNEW\n<!-- bench:end -->\n\n## After\ntext\n"
    assert benchlib.replace_between_markers(updated, "NEW") == updated


@pytest.mark.parametrize("text", ["no markers", "<!-- bench:end --> then <!-- bench:start -->",
                                  "<!-- bench:start --> only"])
def test_replace_between_markers_refuses_missing_markers(text: str) -> None:
    with pytest.raises(ValueError, match="bench:start"):
        benchlib.replace_between_markers(text, "NEW")


def test_seconds_by_play_sums_the_tasks_of_each_play() -> None:
    stats = {"tasks": [{"play": "servers", "seconds": 1.5}, {"play": "servers", "seconds": 2.0},
                       {"play": "platform", "seconds": 4.25}]}
    assert benchlib.seconds_by_play(stats) == {"servers": 3.5, "platform": 4.25}


def test_deploy_breakdown_groups_the_plays_by_what_they_do() -> None:
    by_play = {"Ensure the Kubernetes clusters": 11.0, "Ensure the host-mode Redis servers": 13.0,
               "Ensure the host-mode PostgreSQL servers": 17.5, "Deploy the platform to each cluster": 40.25,
               "Preflight - check the inventory": 2.0, "Run the synthetic trading workload in the live region": 1.5}
    assert benchlib.deploy_breakdown(by_play) == {"cluster": 11.0, "host-mode servers": 30.5, "platform": 40.25,
                                                  "other": 3.5}


def test_markdown_shows_the_breakdown_and_the_load_the_run_started_under() -> None:
    results = _results()
    results["machine"]["load_average_at_start"] = [0.12, 0.5, 1.0]
    results["rows"][1]["deploy"]["seconds_by_play"] = {"Deploy the platform to each cluster": 30.0}
    results["rows"][1]["redeploy"]["seconds_by_play"] = {"Deploy the platform to each cluster": 3.0}
    block = benchlib.markdown(results)
    assert "load average 0.12 / 0.50 / 1.00 at the start" in block
    assert "| 300 | 0.0 / 0.0 | 0.0 / 0.0 | 30.0 / 3.0 | 0.0 / 0.0 |" in block


def test_a_target_that_reads_under_a_limit_is_missed_at_the_limit() -> None:
    # "validate(6) < 5 s", "halt flag set < 1 s", "asked to scale to zero < 5 s": an observation of exactly the limit
    # (as the bench rounds it) does not meet them; the ratio targets read "<=" and are met at their limit.
    rows = [_row(6, 20, 5, 5.0, 20, stop=(1.0, 5.0)), _row(300, 60, 10, 10.0, 60, stop=(0.99, 4.99))]
    met = _met(benchlib.evaluate(rows, FRESH))
    assert met["validate_small"] is False and met["stop_halt_flag"] is False and met["stop_scaled"] is False
    assert met["deploy_vs_kubectl"] is True and met["deploy_growth"] is True and met["validate_growth"] is True
