"""The coordinator's blue-green decisions (filter_plugins/bluegreen.py): which color a release runs in, when the
Service moves, and the record a later deploy and a rollback read from the release pointer."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import REPO_ROOT, load_module

bluegreen = load_module("bluegreen", "filter_plugins")
lifecycle = load_module("lifecycle", "filter_plugins")


def pointer(active: str, **releases: str) -> dict[str, str]:
    return {"current": releases[active], "history": "[]",
            "coordinator": json.dumps({"active": active, "releases": releases})}


def test_a_first_deploy_runs_blue_and_serves_it_only_once_it_is_ready() -> None:
    plan = bluegreen.coordinator_plan({}, "A")
    assert plan == {"color": "blue", "serving": "", "switch": True, "releases": {"blue": "A"}, "stable": ""}
    # turned on where a single Deployment runs Z: the analysis compares A with Z
    assert bluegreen.coordinator_plan({"current": "Z"}, "A")["stable"] == "Z"


def test_the_release_the_live_color_runs_changes_nothing() -> None:
    plan = bluegreen.coordinator_plan(pointer("green", blue="A", green="B"), "B")
    assert plan == {"color": "green", "serving": "green", "switch": False, "releases": {"blue": "A", "green": "B"},
                    "stable": "B"}


def test_a_new_release_goes_to_the_idle_color_while_the_live_one_keeps_serving() -> None:
    plan = bluegreen.coordinator_plan(pointer("blue", blue="A", green="Z"), "B")
    assert plan == {"color": "green", "serving": "blue", "switch": True, "releases": {"blue": "A", "green": "B"},
                    "stable": "A"}
    switched = bluegreen.coordinator_switched(plan)
    assert (switched["serving"], switched["switch"]) == ("green", False)


def test_the_record_names_the_color_serving_and_a_second_deploy_plans_nothing() -> None:
    data = lifecycle.release_pointer(pointer("blue", blue="A"), "B")
    plan = bluegreen.coordinator_switched(bluegreen.coordinator_plan(data, "B"))
    recorded = bluegreen.coordinator_record(data, plan)
    assert json.loads(recorded["coordinator"]) == {"active": "green", "releases": {"blue": "A", "green": "B"}}
    assert (recorded["current"], recorded["previous"]) == ("B", "A")
    assert bluegreen.coordinator_plan(recorded, "B")["switch"] is False
    assert bluegreen.coordinator_record(recorded, bluegreen.coordinator_plan(recorded, "B")) == recorded


def test_a_plan_never_switched_keeps_the_live_color_in_the_record() -> None:
    plan = bluegreen.coordinator_plan(pointer("blue", blue="A"), "B")  # --check: no switch happened
    assert json.loads(bluegreen.coordinator_record(pointer("blue", blue="A"), plan)["coordinator"])["active"] == "blue"
    assert "coordinator" not in bluegreen.coordinator_record({}, bluegreen.coordinator_plan({}, "A"))


def test_blue_green_turned_off_drops_the_record_and_keeps_the_rest_of_the_pointer() -> None:
    data = lifecycle.release_pointer(pointer("green", blue="A", green="B"), "C")
    after = bluegreen.coordinator_record(data, {})
    assert after["coordinator"] == "" and (after["current"], after["previous"]) == ("C", "B")
    assert bluegreen.coordinator_plan(after, "D")["serving"] == ""  # an emptied record is no record
    assert bluegreen.coordinator_record({"current": "A"}, {}) == {"current": "A"}


def objects(color: str, release: str) -> list[dict[str, Any]]:
    return [{"kind": "Deployment", "metadata": {"name": f"trading-coordinator-{color}",
                                                "labels": {"app.kubernetes.io/version": release}}},
            {"kind": "Service", "metadata": {"name": "trading-coordinator"},
             "spec": {"selector": {"sapphire.io/color": color}}},
            {"kind": "Service", "metadata": {"name": "trading-coordinator-preview"},
             "spec": {"selector": {"sapphire.io/color": "blue" if color == "green" else "green"}}}]


def test_a_rollback_serves_the_color_of_the_release_rolled_back_to_and_keeps_the_other() -> None:
    after = bluegreen.coordinator_after_rollback(pointer("green", blue="A", green="B"), objects("blue", "A"))
    assert json.loads(after["coordinator"]) == {"active": "blue", "releases": {"blue": "A", "green": "B"}}
    # the next deploy of B goes back to green, which still runs it
    assert bluegreen.coordinator_plan(after, "B") == {"color": "green", "serving": "blue", "switch": True,
                                                      "releases": {"blue": "A", "green": "B"}, "stable": "A"}


def test_a_rollback_to_a_release_from_before_blue_green_drops_the_record() -> None:
    single = [{"kind": "Service", "metadata": {"name": "trading-coordinator"}, "spec": {"selector": {}}}]
    assert bluegreen.coordinator_after_rollback(pointer("blue", blue="A"), single)["coordinator"] == ""
    assert "coordinator" not in bluegreen.coordinator_after_rollback({"current": "A"}, single)


@pytest.mark.parametrize("record", ['{"active": "red", "releases": {}}', '{"active": "blue", "releases": {"red": "A"}}',
                                    "not json"])
def test_a_damaged_record_is_refused_not_guessed(record: str) -> None:
    with pytest.raises(AnsibleFilterError, match="coordinator record"):
        bluegreen.coordinator_plan({"coordinator": record}, "A")


def test_a_run_with_tags_release_plans_the_colors_it_records() -> None:
    """release.yml writes the plan into the pointer: `deploy.yml --tags release` must plan too, or it would record the
    colors wrong. An include's tags do not reach the tasks it includes: each task carries them."""
    main = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "tasks" / "main.yml").read_text())
    include = next(task for task in main if task.get("ansible.builtin.include_tasks") == "bluegreen_plan.yml")
    assert "release" in include["tags"]
    planned = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "tasks" / "bluegreen_plan.yml").read_text())
    assert planned and all("release" in task.get("tags", []) for task in planned)
    recorded = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "tasks" / "release.yml").read_text())
    assert any("sapphire_coordinator_record" in json.dumps(task) for task in recorded)
