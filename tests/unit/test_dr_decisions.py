"""filter_plugins/dr.py: the decisions of a DR switch - plan, go/no-go, who is fenced, measured loss, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module
from test_topology import CLUSTERS, LOCAL
from test_topology import REDIS as REDIS_HOME

REPO_ROOT = Path(__file__).resolve().parents[2]


dr = load_module("dr", "filter_plugins")
topo = load_module("topology", "filter_plugins")

REDIS = [REDIS_HOME[0], {**REDIS_HOME[1], "redis_replica_of": "redis-primary"}]
POSTGRES = [{**LOCAL, "inventory_hostname": "pg-primary", "postgres_port": 15432,
             "postgres_replication_role": "primary", "sapphire_region": "primary"},
            {**LOCAL, "inventory_hostname": "pg-dr", "postgres_port": 15433, "postgres_replication_role": "standby",
             "sapphire_region": "dr", "postgres_primary_host": "pg-primary"}]
FAILED_OVER = {"live_region": "dr", "epoch": 1, "host_overrides": {
    "redis-dr": {"redis_replication_role": "primary"}, "redis-primary": {"redis_replication_role": "replica"},
    "pg-dr": {"postgres_replication_role": "primary"}, "pg-primary": {"postgres_replication_role": "standby"}}}


def plan(state: dict[str, Any] | None = None, target: str = "dr", **kwargs: Any) -> dict[str, Any]:
    return dr.plan(topo.topology(CLUSTERS, REDIS, POSTGRES, state, **kwargs), target)


def pg_result(role: str, reachable: bool = True, **position: Any) -> dict[str, Any]:
    if not reachable:
        return {"checks": [{"name": "postgres_reachable", "status": "fail"}]}
    return {"checks": [{"name": "postgres_reachable", "status": "ok"}], "role": role, "position": position}


def redis_result(reachable: bool = True, **info: Any) -> dict[str, Any]:
    if not reachable:
        return {"checks": [{"name": "redis_reachable", "status": "fail"}]}
    return {"checks": [{"name": "redis_reachable", "status": "ok"}], "info": info}


def measured(pg_new: Any = None, pg_old: Any = None, redis_new: Any = None, redis_old: Any = None) -> dict[str, Any]:
    return {"postgres": {"new": pg_new or pg_result("standby", lsn="0/3000000", replay_lsn="0/3000000",
                                                    replay_delay_seconds=0.0, last_contact_seconds=0.5),
                         "old": pg_old or pg_result("primary", lsn="0/3000000")},
            "redis": {"new": redis_new or redis_result(role="slave", slave_repl_offset=500, master_link_status="up",
                                                       master_last_io_seconds_ago=0),
                      "old": redis_old or redis_result(role="master", master_repl_offset=500)}}


# --- plan ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("modes", "expected"), [
    ({"postgres": "external", "redis": "external"},
     ["PostgreSQL is a service outside the clusters (postgres_mode external)",
      "Redis is a service outside the clusters (redis_mode external)"]),
    ({"postgres": "kubernetes", "redis": "host"},
     ["in-cluster PostgreSQL (postgres_mode kubernetes) is a standalone database"]),
])
def test_a_switch_of_services_this_toolkit_cannot_promote_is_a_problem(modes: dict[str, str],
                                                                       expected: list[str]) -> None:
    """prod and staging (external) and the in-cluster databases: refused, never a switch that promotes nothing or
    lands on an empty database and reports success."""
    topology = topo.topology(CLUSTERS, [], [], None)
    problems = dr.plan(topology, "dr", "failover", modes)["problems"]
    assert len(problems) == len(expected), problems
    for problem, text in zip(problems, expected, strict=True):
        assert text in problem, problem


def external(provider: str = "self_managed", redis_provider: str | None = None) -> dict[str, Any]:
    """The two regions' servers declared as external endpoints (groups postgres_endpoints, redis_endpoints)."""
    def endpoints(service: str, hosts: list[dict[str, Any]], chosen: str) -> list[dict[str, Any]]:
        return [{**host, f"{service}_external_host": "127.0.0.1",
                 f"{service}_external_port": host.get(f"{service}_port", 5432),
                 f"{service}_external_provider": chosen} for host in hosts]
    return {"postgres": endpoints("postgres", POSTGRES, provider),
            "redis": endpoints("redis", REDIS, redis_provider or provider)}


EXTERNAL = {"postgres": "external", "redis": "external"}


def test_self_managed_endpoints_are_switched_over_the_network() -> None:
    topology = topo.topology(CLUSTERS, [], [], None, "external", "external", external())
    result = dr.plan(topology, "dr", "failover", EXTERNAL)
    assert result["problems"] == []
    assert result["postgres"]["provider"] == "self_managed" and result["redis"]["provider"] == "self_managed"
    assert (result["postgres"]["new"]["host"], result["postgres"]["old"]["host"]) == ("pg-dr", "pg-primary")
    assert result["postgres"]["new"]["port"] == 15433
    assert result["layout"]["redis-primary"] == {"redis_replication_role": "replica", "redis_replica_of": "redis-dr"}


@pytest.mark.parametrize("provider", ["unset", "aurora"])
def test_a_provider_dr_failover_does_not_promote_is_refused_by_name(provider: str) -> None:
    topology = topo.topology(CLUSTERS, [], [], None, "external", "external", external("self_managed", provider))
    problems = dr.plan(topology, "dr", "failover", EXTERNAL)["problems"]
    assert len(problems) == 1 and f"Redis provider {provider} (redis_external_provider)" in problems[0], problems


def test_a_fenced_former_primary_is_not_promoted_back_before_its_owner_reseeds_it() -> None:
    """self_managed failback: the old primary was fenced read-only over the network and kept its own history; only
    its owner can make it a standby again. Promoting it (it reads as a primary) would lose the DR period."""
    overrides = {**FAILED_OVER["host_overrides"],
                 "pg-primary": {"postgres_replication_role": "standby", "postgres_fenced": True}}
    topology = topo.topology(CLUSTERS, [], [], FAILED_OVER | {"host_overrides": overrides}, "external", "external",
                             external())
    back = dr.plan(topology, "primary", "failback", EXTERNAL)
    fenced = pg_result("primary", lsn="0/5000000") | {"read_only": True}
    gate = dr.preflight(back, measured(pg_new=fenced, pg_old=pg_result("primary", lsn="0/6000000")), 300, force=True)
    assert not gate["allowed"]
    assert any("pg-primary is a former primary fenced by an earlier switch" in reason and "re-seed" in reason
               for reason in gate["refuse"]), gate["refuse"]
    reseeded = pg_result("standby", lsn="0/6000000", replay_lsn="0/6000000", replay_delay_seconds=0.0)
    assert dr.preflight(back, measured(pg_new=reseeded, pg_old=pg_result("primary", lsn="0/6000000")), 300)["allowed"]
    # A replica its provider promoted (manual mode) is a primary too, but was never fenced: it goes ahead.
    forward = dr.plan(topo.topology(CLUSTERS, [], [], None, "external", "external", external()), "dr")
    promoted = pg_result("primary", lsn="0/7000000")
    assert dr.preflight(forward, measured(pg_new=promoted), 300)["allowed"]


def test_host_mode_services_are_no_problem() -> None:
    topology = topo.topology(CLUSTERS, REDIS, POSTGRES, None)
    assert dr.plan(topology, "dr", "failover", {"postgres": "host", "redis": "host"})["problems"] == []


def test_a_failover_promotes_the_dr_servers_and_fences_the_primary_region() -> None:
    result = plan()
    assert (result["from"], result["to"], result["noop"], result["epoch"]) == ("primary", "dr", False, 1)
    assert result["postgres"]["new"]["host"] == "pg-dr" and result["postgres"]["old"]["host"] == "pg-primary"
    assert result["redis"]["new"]["host"] == "redis-dr" and result["redis"]["old"]["host"] == "redis-primary"
    assert result["layout"]["pg-primary"] == {"postgres_replication_role": "standby", "postgres_primary_host": "pg-dr",
                                              "postgres_fenced": True}
    assert result["layout"]["pg-dr"] == {"postgres_replication_role": "primary", "postgres_primary_host": ""}
    assert result["layout"]["redis-primary"] == {"redis_replication_role": "replica", "redis_replica_of": "redis-dr"}
    assert result["layout"]["redis-dr"] == {"redis_replication_role": "primary", "redis_replica_of": ""}
    assert result["layout"]["local-primary"] == {"agents_scale_to_zero": True}
    assert result["layout"]["local-dr"] == {"agents_scale_to_zero": False}
    assert result["clusters"] == {"live": ["local-dr"], "fenced": ["local-primary"]}
    assert result["host_overrides"] == result["layout"]


def test_a_failback_returns_to_the_home_layout_with_no_override_and_the_next_epoch() -> None:
    result = plan(FAILED_OVER, "primary")
    assert result["postgres"]["new"]["host"] == "pg-primary" and result["postgres"]["old"]["host"] == "pg-dr"
    assert result["redis"]["old"]["host"] == "redis-dr"
    assert result["epoch"] == 2
    assert result["host_overrides"] == {}  # the inventory describes the home layout
    assert result["clusters"]["fenced"] == ["local-dr"]


def test_a_switch_to_the_live_region_is_a_noop() -> None:
    assert plan(FAILED_OVER, "dr")["noop"] is True
    assert plan(None, "primary")["noop"] is True


def test_a_region_without_a_server_to_promote_is_a_problem() -> None:
    topology = topo.topology(CLUSTERS, REDIS, POSTGRES[:1], None)
    assert "no postgres server" in " ".join(dr.plan(topology, "dr")["problems"])


def test_no_target_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="dr_target_region"):
        dr.plan(topo.topology(CLUSTERS, REDIS, POSTGRES, None), "")


def test_external_data_services_have_nothing_to_promote_in_the_plan() -> None:
    result = plan(redis_mode="external", postgres_mode="external")
    assert result["postgres"]["new"] is None and result["redis"]["new"] is None and result["problems"] == []


# --- go / no-go --------------------------------------------------------------------------------------


def test_caught_up_servers_within_the_rpo_may_switch_and_every_old_server_is_fenced() -> None:
    gate = dr.preflight(plan(), measured(), 300)
    assert gate["allowed"] and gate["refuse"] == [] and gate["over_rpo"] == []
    assert gate["fence_verified"] is True
    assert gate["services"]["postgres"]["lag_bytes"] == 0 and gate["services"]["redis"]["lag_bytes"] == 0
    assert gate["fence"] == {"clusters": ["local-primary"], "not_fenced": [], "postgres": "pg-primary",
                             "redis": "redis-primary"}


def test_an_unreachable_old_primary_is_refused_unless_the_old_region_is_declared_lost() -> None:
    gone = measured(pg_old=pg_result("primary", reachable=False), redis_old=redis_result(reachable=False))
    refused = dr.preflight(plan(), gone, 300, force=True)  # dr_force does not go past it
    assert not refused["allowed"]
    assert "dr_old_region_lost=true" in refused["refuse"][0]
    declared = dr.preflight(plan(), gone, 300, old_region_lost=True)
    assert declared["allowed"] and declared["fence_verified"] is False
    assert declared["fence"]["postgres"] == "" and declared["fence"]["redis"] == ""
    assert declared["fence"]["not_fenced"] == ["PostgreSQL pg-primary", "Redis redis-primary"]
    assert "not measured" in declared["services"]["postgres"]["how"]


def crashed(running: bool = False, data: bool = True) -> dict[str, Any]:
    """An old primary that does not answer, probed on its host."""
    return {**pg_result("primary", reachable=False), "probe": {"data": data, "running": running}}


def test_an_old_primary_down_on_a_reachable_host_is_fenced_on_its_disk_without_a_declaration() -> None:
    gate = dr.preflight(plan(), measured(pg_old=crashed()), 300)
    assert gate["allowed"] and gate["fence_verified"] is True, gate
    assert gate["fence"]["postgres"] == "pg-primary" and gate["fence"]["not_fenced"] == []
    assert gate["services"]["postgres"]["old_down_on_host"] is True
    assert "fenced on its disk" in gate["services"]["postgres"]["how"]


@pytest.mark.parametrize("probe", [{"running": True}, {"data": False}], ids=["postmaster-still-there", "no-data"])
def test_an_old_primary_that_cannot_be_fenced_on_its_disk_still_needs_the_declaration(probe: dict[str, bool]) -> None:
    gate = dr.preflight(plan(), measured(pg_old=crashed(**probe)), 300)
    assert not gate["allowed"] and "dr_old_region_lost=true" in gate["refuse"][0]
    assert gate["unreachable_old"] == ["PostgreSQL pg-primary"]


def test_the_probe_reaches_the_preflight_through_the_measurements() -> None:
    the_plan = plan()
    hostvars = {"pg-primary": {"__dr_pg_measured": pg_result("primary", reachable=False),
                               "postgres_probe": {"data": "True", "running": "False"}},
                "pg-dr": {"__dr_pg_measured": pg_result("standby", lsn="0/3000000", replay_lsn="0/3000000")}}
    found = dr.measurements(the_plan, hostvars)
    assert found["postgres"]["old"]["probe"] == {"data": "True", "running": "False"}
    assert dr.down_on_reachable_host(found["postgres"]["old"])


def test_an_unreachable_new_server_is_refused_even_forced_and_declared() -> None:
    gate = dr.preflight(plan(), measured(pg_new=pg_result("standby", reachable=False)), 300, force=True,
                        old_region_lost=True)
    assert not gate["allowed"] and "nothing to promote" in gate["refuse"][0]


def test_a_lag_above_the_rpo_is_refused_unless_forced() -> None:
    late = measured(pg_new=pg_result("standby", lsn="0/2000000", replay_lsn="0/2000000", replay_delay_seconds=400.0,
                                     last_contact_seconds=0.1),
                    pg_old=pg_result("primary", lsn="0/3000000"))
    gate = dr.preflight(plan(), late, 300)
    assert not gate["allowed"] and "lags 400.0 s > dr_rpo_seconds 300" in gate["over_rpo"][0]
    assert gate["services"]["postgres"]["lag_bytes"] == 0x1000000
    forced = dr.preflight(plan(), late, 300, force=True)
    assert forced["allowed"] and forced["forced"]


def test_redis_lag_is_the_offset_difference_and_a_down_link_counts_its_seconds() -> None:
    behind = measured(redis_new=redis_result(role="slave", slave_repl_offset=400, master_link_status="up",
                                             master_last_io_seconds_ago=2),
                      redis_old=redis_result(role="master", master_repl_offset=500))
    assert dr.preflight(plan(), behind, 300)["services"]["redis"]["lag_bytes"] == 100
    down = measured(redis_new=redis_result(role="slave", slave_repl_offset=400, master_link_status="down",
                                           master_link_down_since_seconds=900),
                    redis_old=redis_result(reachable=False))
    gate = dr.preflight(plan(), down, 300, old_region_lost=True)
    assert gate["services"]["redis"]["lag_seconds"] == 900 and not gate["allowed"]


def test_an_already_promoted_server_has_no_lag() -> None:
    gate = dr.preflight(plan(), measured(pg_new=pg_result("primary", lsn="0/5000000"),
                                         redis_new=redis_result(role="master", master_repl_offset=900)), 300)
    assert gate["allowed"] and gate["services"]["postgres"]["lag_seconds"] == 0.0


def test_measurements_come_from_hostvars_and_a_skipped_task_is_no_measurement() -> None:
    hostvars = {"pg-dr": {"__dr_pg_measured": pg_result("standby")},
                "pg-primary": {"__dr_pg_measured": {"skipped": True}},
                "redis-dr": {}, "redis-primary": {"__dr_redis_measured": redis_result(role="master")}}
    found = dr.measurements(plan(), hostvars)
    assert found["postgres"]["new"]["role"] == "standby" and found["postgres"]["old"] is None
    assert found["redis"]["new"] is None and found["redis"]["old"]["info"]["role"] == "master"


# --- loss and RPO ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("0/3000148", 0x3000148), ("16/B374D848", (0x16 << 32) + 0xB374D848),
                                             ("", None), ("nonsense", None), (None, None)])
def test_lsn_parsing(text: Any, value: int | None) -> None:
    assert dr.parse_lsn(text) == value


def test_loss_is_measured_in_bytes_and_zero_when_the_new_primary_replayed_everything() -> None:
    assert dr.loss("postgres", "0/3000148", "0/30001C0") == {"measured": True, "bytes": 0, "why": "",
                                                              "old": "0/3000148", "new": "0/30001C0"}
    assert dr.loss("postgres", "0/3000200", "0/3000100")["bytes"] == 0x100
    assert dr.loss("redis", 1500, "1400")["bytes"] == 100
    unknown = dr.loss("postgres", "", "0/3000100", "the old primary was not reached (declared lost)")
    assert unknown == {"measured": False, "bytes": None, "why": "the old primary was not reached (declared lost)"}


def test_rpo_is_met_only_when_every_loss_was_measured_at_zero() -> None:
    zero = dr.loss("postgres", "0/1", "0/1")
    assert dr.rpo_verdict({"postgres": zero, "redis": dr.loss("redis", 5, 5)}).startswith("met")
    assert dr.rpo_verdict({"postgres": zero, "redis": dr.loss("redis", "", 5, "declared lost")}) == \
        "not measured: redis: declared lost"
    assert dr.rpo_verdict({"postgres": dr.loss("postgres", "0/10", "0/1"), "redis": None}) == \
        "missed: postgres lost 15 bytes"
    assert dr.rpo_verdict({"postgres": None, "redis": None}).startswith("not measured")


# --- report ------------------------------------------------------------------------------------------


def test_the_report_measures_the_rto_from_the_fence_to_the_validated_region() -> None:
    steps = dr.step([], "fence", 100.0, 104.5, "ok", {"redis_halt": "redis-primary"})
    steps = dr.step(steps, "promote", 104.5, 110.0)
    steps = dr.step(steps, "validate", 110.0, 112.25)
    the_plan = plan()
    gate = dr.preflight(the_plan, measured(), 300)
    losses = {"postgres": dr.loss("postgres", "0/1", "0/1"), "redis": dr.loss("redis", 3, 3)}
    report = dr.report(the_plan, steps, gate, losses, {"id": "20261205T010000Z", "actor": "sre", "reason": "drill",
                                                       "rto_target_seconds": 900, "rpo_target_seconds": 300})
    assert report["rto_seconds"] == 12.2 and report["rto"].startswith("met")
    assert report["rpo"].startswith("met") and report["fence_verified"] is True
    assert report["promoted"] == {"postgres": "pg-dr", "redis": "redis-dr"}
    assert [item["step"] for item in report["steps"]] == ["fence", "promote", "validate"]
    json.dumps(report)  # the JSON report
    text = dr.markdown(report)
    assert "| fence |" in text and "RTO met" in text and "postgres: 0 bytes" in text


def test_a_report_without_a_validated_region_does_not_claim_an_rto() -> None:
    the_plan = plan()
    report = dr.report(the_plan, dr.step([], "fence", 1.0, 2.0), dr.preflight(the_plan, measured(), 300), {},
                       {"rto_target_seconds": 900})
    assert report["rto_seconds"] is None and report["rto"].startswith("not measured")
    assert report["rpo"].startswith("not measured")


def test_the_check_walk_lists_every_step_and_the_reads_that_ran() -> None:
    the_plan = plan()
    lines = dr.check_walk(the_plan, dr.preflight(the_plan, measured(), 300), 60)
    text = "\n".join(lines)
    for expected in ("measure (ran for real", "CLIENT PAUSE WRITE on Redis redis-primary", "local-primary to zero",
                     "stop PostgreSQL pg-primary", "pg_promote pg-dr", "epoch 1", "one writable primary",
                     "drill report"):
        assert expected in text, (expected, lines)
    refused = dr.check_walk(the_plan, dr.preflight(the_plan, measured(pg_old=pg_result("primary", reachable=False)),
                                                    300), 60)
    refusal = next(line for line in refused if line.startswith("REFUSED"))
    assert "dr_old_region_lost" in refusal and refused[refused.index(refusal) + 1] == "once that is resolved, it would:"
    assert "pg_promote pg-dr" in "\n".join(refused)


def test_a_manual_provider_is_switched_with_the_operator_and_the_walk_says_what_to_promote_where() -> None:
    """prod (Cloud SQL, Memorystore): planned, fenced and measured by the toolkit; promoted by the operator in the
    provider between two runs; the old Redis cannot be made to follow over the network."""
    topology = topo.topology(CLUSTERS, [], [], None, "external", "external", external("cloudsql", "memorystore"))
    the_plan = dr.plan(topology, "dr", "failover", EXTERNAL)
    assert the_plan["problems"] == [] and the_plan["postgres"]["manual"] and the_plan["redis"]["manual"]
    steps = dr.manual_steps(the_plan)
    assert steps[0].startswith("PostgreSQL pg-dr (127.0.0.1:15433, region dr) in cloudsql: promote the cross-region")
    assert "gcloud redis instances failover" in steps[1]
    text = "\n".join(dr.check_walk(the_plan, dr.preflight(the_plan, measured(), 300), 60))
    assert "ask the operator to promote PostgreSQL pg-dr" in text and "dr_promoted_in_provider=true" in text
    assert "pg_promote" not in text and "REPLICAOF NO ONE" not in text
    assert "Redis redis-primary stays a primary fenced by the halt flag only (memorystore" in text
    assert dr.manual_steps(plan()) == []


def test_with_the_old_primary_gone_the_lag_is_the_age_of_the_last_replayed_commit_or_unknown() -> None:
    """The link is gone (no receiver, nothing left to replay): the replay delay reads 0, which says nothing."""
    cut = pg_result("standby", lsn="0/3000000", replay_lsn="0/3000000", replay_delay_seconds=0.0,
                    last_contact_seconds=None, last_replay_age_seconds=420.0)
    gone = pg_result("primary", reachable=False)
    gate = dr.preflight(plan(), measured(pg_new=cut, pg_old=gone), 300, old_region_lost=True)
    assert gate["services"]["postgres"]["lag_seconds"] == 420.0 and not gate["allowed"]
    never = pg_result("standby", lsn="0/3000000", replay_lsn="0/3000000", replay_delay_seconds=0.0,
                      last_contact_seconds=None, last_replay_age_seconds=None)
    gate = dr.preflight(plan(), measured(pg_new=never, pg_old=gone), 300, old_region_lost=True)
    assert gate["services"]["postgres"]["lag_seconds"] is None
    assert "cannot be measured" in gate["over_rpo"][0] and not gate["allowed"]
    assert dr.preflight(plan(), measured(pg_new=never, pg_old=gone), 300, force=True, old_region_lost=True)["allowed"]


def test_bytes_past_the_fork_of_a_server_promoted_before_the_run_are_not_called_a_measured_loss() -> None:
    """Manual mode: the operator promoted the replica in the provider; the fenced old primary may have written a
    checkpoint since. Those bytes are an unknown, not a measured loss - and 0 bytes stays a measured 0."""
    after = dr.loss("postgres", "0/3000100", "0/3000000", promoted_before=True)
    assert after["measured"] is False and after["bytes"] == 256 and "housekeeping" in after["why"]
    assert dr.rpo_verdict({"postgres": after}).startswith("not measured: postgres: 256 bytes")
    assert dr.loss("postgres", "0/3000000", "0/3000000", promoted_before=True)["measured"] is True
    assert dr.loss("postgres", "0/3000100", "0/3000000")["bytes"] == 256  # promoted by this run: a measured loss
