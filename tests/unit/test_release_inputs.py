"""A release's inputs checked before deploy.yml writes anything (filter_plugins/release_inputs.py): the canary
analysis, the trading gate's market hours and the synthetic workload's misbehaviour, each problem naming the variable
and the field, with the parsers the run itself uses."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import REPO_ROOT, load_module

inputs = load_module("release_inputs", "filter_plugins")
AGENTS_DEFAULTS = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "defaults" / "main.yml").read_text())
SHIPPED = AGENTS_DEFAULTS["agents_canary_analysis"]


def analysis(**change: Any) -> dict[str, Any]:
    value = copy.deepcopy(SHIPPED)
    value.update(change)
    return value


def test_the_shipped_analysis_and_gate_defaults_pass() -> None:
    assert inputs.canary_analysis_problems(SHIPPED) == []
    assert inputs.market_hours_problems(AGENTS_DEFAULTS["agents_gate_market_hours"]) == []


@pytest.mark.parametrize(("metric", "message"), [
    ({"success_condition": "low"}, "agents_canary_analysis.metrics[0].success_condition (error-rate) must be"),
    ({"failure_condition": None, "success_condition": ""}, "agents_canary_analysis.metrics[0] (error-rate) needs a"),
    ({"query": "rate(x{tier=\"$tiers\"}[1m])"}, "agents_canary_analysis.metrics[0].query (error-rate) uses $tiers"),
    ({"failure_limit": -1}, "agents_canary_analysis.metrics[0].failure_limit (error-rate) must be a whole number"),
    ({"name": "heartbeat-age"}, "agents_canary_analysis.metrics[1].name must be set and unique"),
    ({"threshold": 1}, "agents_canary_analysis.metrics[0] has unknown key(s) threshold"),
])
def test_a_bad_metric_is_named_by_variable_index_and_field(metric: dict[str, Any], message: str) -> None:
    bad = analysis()
    bad["metrics"][0].update(metric)
    problems = inputs.canary_analysis_problems(bad)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_every_placeholder_the_run_passes_is_accepted() -> None:
    """$release, $stable, $tier and $window: the arguments canary_tier.yml gives the analysis."""
    good = analysis(metrics=[{"name": "m", "query": "x{r=\"$release\",s=\"$stable\",t=\"$tier\"}[$window]",
                              "success_condition": "< 1"}])
    assert inputs.canary_analysis_problems(good) == []


@pytest.mark.parametrize(("change", "message"), [
    ({"interval": 0}, "agents_canary_analysis.interval must be a number of seconds >= 1"),
    ({"interval": "soon"}, "agents_canary_analysis.interval must be a number of seconds >= 1"),
    ({"initial_delay": -5}, "agents_canary_analysis.initial_delay must be a number of seconds >= 0"),
    ({"count": 2.5}, "agents_canary_analysis.count must be a whole number >= 1"),
    ({"count": 0}, "agents_canary_analysis.count must be a whole number >= 1"),
    ({"window": "2 minutes"}, "agents_canary_analysis.window must be a Prometheus duration"),
    ({"metrics": "error-rate"}, "agents_canary_analysis.metrics must be a list"),
    ({"metrics": []}, "agents_canary_analysis.metrics must list at least one metric"),
    ({"steps": 3}, "agents_canary_analysis has unknown key(s) [steps]"),
])
def test_a_bad_schedule_is_named(change: dict[str, Any], message: str) -> None:
    problems = inputs.canary_analysis_problems(analysis(**change))
    assert any(problem.startswith(message) for problem in problems), problems


def test_the_coordinator_analysis_is_named_as_its_own_variable_and_may_be_turned_off() -> None:
    shipped = AGENTS_DEFAULTS["agents_coordinator_analysis"]
    assert inputs.canary_analysis_problems(shipped, "agents_coordinator_analysis", 0) == []
    assert inputs.canary_analysis_problems({**shipped, "count": 0}, "agents_coordinator_analysis", 0) == []
    assert inputs.canary_analysis_problems({**shipped, "count": -1}, "agents_coordinator_analysis", 0) == [
        "agents_coordinator_analysis.count must be a whole number >= 0, got -1"]
    assert inputs.canary_analysis_problems({**shipped, "window": "soon"}, "agents_coordinator_analysis", 0) == [
        "agents_coordinator_analysis.window must be a Prometheus duration such as 2m, got 'soon'"]


def test_numbers_from_a_survey_or_minus_e_are_numbers() -> None:
    assert inputs.canary_analysis_problems(analysis(interval="30", count="3", initial_delay="0")) == []


def test_an_analysis_that_is_not_a_dict_is_named() -> None:
    assert inputs.canary_analysis_problems("fast") == [
        "agents_canary_analysis must be a dict with interval, count, window, initial_delay, metrics, got 'fast'"]


@pytest.mark.parametrize(("windows", "message"), [
    ([{"start": "9:30", "end": "16:00"}], "agents_gate_market_hours[0].start must be a time HH:MM (24 h), got '9:30'"),
    ([{"start": "09:30", "end": "16:00", "timezone": "Mars/Olympus"}],
     "agents_gate_market_hours[0].timezone 'Mars/Olympus' is not a known time zone"),
    ([{"start": "09:30", "end": "16:00"}, {"days": "mon", "start": "01:00", "end": "02:00"}],
     "agents_gate_market_hours[1].days must be a list"),
    ({"start": "09:30", "end": "16:00"}, "agents_gate_market_hours must be a list of {days, start, end, timezone}"),
])
def test_bad_market_hours_are_named_by_the_variable(windows: Any, message: str) -> None:
    problems = inputs.market_hours_problems(windows)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_market_hours_across_a_weekend_night_pass() -> None:
    assert inputs.market_hours_problems([{"days": ["sun"], "start": "22:00", "end": "02:00",
                                          "timezone": "America/New_York"}]) == []
    assert inputs.market_hours_problems([]) == [] and inputs.market_hours_problems(None) == []


BAD_MISBEHAVIOUR = {"release": "r2", "error_rate": 0.3, "stale_heartbeats": True}


@pytest.mark.parametrize("value", [BAD_MISBEHAVIOUR, json.dumps(BAD_MISBEHAVIOUR)], ids=["yaml", "minus-e string"])
def test_a_misbehaviour_means_the_same_from_yaml_and_from_a_string(value: Any) -> None:
    assert inputs.misbehaviour(value) == BAD_MISBEHAVIOUR
    assert inputs.misbehaviour_problems(value) == []


@pytest.mark.parametrize("value", [{}, "", None, "{}"])
def test_no_misbehaviour_is_an_empty_object(value: Any) -> None:
    assert inputs.misbehaviour(value) == {}


@pytest.mark.parametrize(("value", "message"), [
    ({"release": "r2", "errors": 0.5}, "workload_misbehave: unknown field(s) errors"),
    ({"release": "r2", "error_rate": 2}, "workload_misbehave: error_rate must be a number from 0 to 1"),
    ({"error_rate": 0.5}, "workload_misbehave: release must name the release"),
    ({"release": "r2", "stale_heartbeats": "yes please"}, "workload_misbehave: stale_heartbeats must be true or false"),
    ("{release: r2", "workload_misbehave must be a JSON object"),
])
def test_a_bad_misbehaviour_is_named(value: Any, message: str) -> None:
    problems = inputs.misbehaviour_problems(value)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    with pytest.raises(AnsibleFilterError, match="workload_misbehave"):
        inputs.misbehaviour(value)


def test_the_preflights_check_them_before_anything_is_written() -> None:
    """deploy.yml's preflight play includes both checks; the workload passes --misbehave through the same filter."""
    agents = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "tasks" / "preflight.yml").read_text())
    checked = json.dumps(agents)
    assert "sapphire_canary_analysis_problems" in checked and "sapphire_market_hours_problems" in checked
    deploy = yaml.safe_load((REPO_ROOT / "playbooks" / "deploy.yml").read_text())
    preflight = next(play for play in deploy if play.get("name", "").startswith("Preflight"))
    included = [task["ansible.builtin.include_role"] for task in preflight["tasks"]
                if "ansible.builtin.include_role" in task]
    assert {"name": "workload", "tasks_from": "preflight"} in included
    workload = (REPO_ROOT / "roles" / "workload" / "tasks" / "main.yml").read_text()
    assert "--misbehave={{ workload_misbehave | sapphire_misbehaviour | to_json }}" in workload
