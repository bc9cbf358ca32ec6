"""The canary's decisions (filter_plugins/canary.py): tier order, the canary Deployments, the workload's ensemble and
the outcomes kept in the release pointer (which a later deploy or rollback keeps)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import REPO_ROOT, load_module

canary = load_module("canary", "filter_plugins")
lifecycle = load_module("lifecycle", "filter_plugins")

TIERS = yaml.safe_load((REPO_ROOT / "inventories" / "common" / "agent_tiers.yml").read_text())["agent_tiers"]
AGENTS = [{"name": "scalping", "tier": "accelerated", "replicas": 1},
          {"name": "momentum", "tier": "standard", "replicas": 2},
          {"name": "volatility", "tier": "heavy", "replicas": 0},
          {"name": "breakout", "tier": "lightweight", "replicas": 1}]


def test_tiers_go_lightweight_first_and_accelerated_last_skipping_idle_ones() -> None:
    assert canary.canary_tiers(AGENTS, TIERS) == ["lightweight", "standard", "accelerated"]


def deployment(name: str = "agent-momentum", replicas: int = 2) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": "agent", "sapphire.io/agent": "momentum", "app.kubernetes.io/version": "B"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": dict(labels), "annotations": {"sapphire.io/desired-replicas": "2"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"sapphire.io/agent": "momentum"}},
                     "strategy": {"type": "RollingUpdate"},
                     "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": []}}}}


def test_a_canary_is_one_replica_beside_the_stable_deployment_selected_by_its_track() -> None:
    stable = deployment()
    rendered = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "agent-momentum"}}, stable]
    (made,) = canary.canary_objects(rendered)
    assert made["metadata"]["name"] == "agent-momentum-canary" and made["spec"]["replicas"] == 1
    assert made["spec"]["selector"]["matchLabels"] == {"sapphire.io/agent": "momentum", "sapphire.io/track": "canary"}
    assert made["spec"]["template"]["metadata"]["labels"]["sapphire.io/track"] == "canary"
    assert "sapphire.io/desired-replicas" not in made["metadata"]["annotations"]
    assert stable == deployment(), "the stable Deployment rendered is left as it was"
    assert canary.canary_objects([deployment(replicas=0)]) == [], "an agent at zero replicas gets no canary"
    (accelerated,) = canary.canary_objects([deployment()], accelerated=True)
    assert accelerated["spec"]["strategy"] == {"type": "Recreate"}


def test_the_workload_runs_the_promoted_tiers_new_and_one_canary_per_agent_of_the_tier() -> None:
    ensemble = canary.canary_ensemble(AGENTS, "A", "B", ["lightweight"], "standard")
    assert [(item["name"], item["replicas"], item["release"]) for item in ensemble] == [
        ("scalping", 1, "A"), ("momentum", 2, "A"), ("momentum", 1, "B"), ("volatility", 0, "A"),
        ("breakout", 1, "B")]
    assert [item["release"] for item in canary.canary_ensemble(AGENTS, "A", "B", [])] == ["A"] * 4


def test_a_canary_instance_is_its_agent_so_it_leaves_no_unknown_heartbeat_behind() -> None:
    """The workload writes each instance's heartbeat under its name; validate warns of a name not in trading_agents.
    A canary pod reports as its agent (AGENT_NAME), and so does the simulated one."""
    for tier in ("lightweight", "standard", "accelerated"):
        ensemble = canary.canary_ensemble(AGENTS, "A", "B", [], tier)
        assert {item["name"] for item in ensemble} == {agent["name"] for agent in AGENTS}
        assert len(ensemble) == len(AGENTS) + 1, "one canary instance beside the stable ones"


def test_outcomes_are_appended_to_the_pointer_and_survive_the_next_release_and_a_rollback() -> None:
    pointer = lifecycle.release_pointer(lifecycle.release_pointer({}, "A"), "A")
    pointer = canary.canary_outcome(pointer, {"release": "B", "tier": "lightweight", "phase": "aborted"})
    assert json.loads(pointer["canary"]) == [{"release": "B", "tier": "lightweight", "phase": "aborted"}]
    moved = lifecycle.release_pointer(pointer, "B")
    assert (moved["current"], moved["previous"], moved["canary"]) == ("B", "A", pointer["canary"])
    assert lifecycle.rollback_pointer(moved, "A")["canary"] == pointer["canary"]
    for index in range(30):
        pointer = canary.canary_outcome(pointer, {"release": str(index)})
    assert [item["release"] for item in json.loads(pointer["canary"])] == [str(i) for i in range(10, 30)]


def test_an_unreadable_canary_history_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not JSON"):
        canary.canary_outcome({"canary": "{"}, {})


def test_a_tier_is_promoted_when_every_stable_deployment_runs_the_release_and_no_canary_is_left() -> None:
    stable, made = deployment(), canary.canary_objects([deployment()])[0]
    assert canary.canary_state([stable], "B") == {"stable": {"agent-momentum": {"replicas": 2, "release": "B"}},
                                                  "canaries": [], "promoted": True}
    assert canary.canary_state([stable, made], "B")["promoted"] is False, "a canary is still running"
    assert canary.canary_state([stable], "C")["promoted"] is False
    assert canary.canary_state([], "B")["promoted"] is False


def pointer(current: str | None) -> dict[str, Any]:
    """A cluster's read of ConfigMap sapphire-releases (none: the cluster has no platform yet)."""
    return {"resources": [] if current is None else [{"data": {"current": current, "previous": "A"}}]}


@pytest.mark.parametrize(("pointers", "strategy", "plan"), [
    ([pointer("B"), pointer("B")], "canary", {"running": ["B"], "changes": True, "stable": "B"}),
    ([pointer("B"), pointer("B")], "rolling", {"running": ["B"], "changes": True, "stable": ""}),
    ([pointer("C"), pointer("C")], "canary", {"running": ["C"], "changes": False, "stable": ""}),  # already running
    ([pointer(None), {"failed": True, "msg": "no cluster yet"}], "canary",
     {"running": [], "changes": False, "stable": ""}),  # a first deploy: nothing to gate or compare with
    ([pointer("B"), pointer("A"), pointer(None)], "canary", {"running": ["A", "B"], "changes": True, "stable": ""}),
    ([pointer("C"), pointer("B")], "rolling", {"running": ["B", "C"], "changes": True, "stable": ""}),
])
def test_the_release_plan_names_what_runs_whether_it_changes_and_the_stable_release(
        pointers: list[dict[str, Any]], strategy: str, plan: dict[str, Any]) -> None:
    """deploy.yml's preflight: the gate asks when any cluster runs another release; a canary compares with the one
    release every cluster runs (two differing releases are refused by the preflight's assert)."""
    assert canary.release_plan(pointers, "C", strategy) == plan


def test_a_release_from_minus_e_is_compared_as_text() -> None:
    assert canary.release_plan([pointer("2026.12")], 2026.12, "canary")["changes"] is False
