"""sapphire_release_analysis: Argo Rollouts' AnalysisRun semantics (conditions, failure, inconclusive and error limits,
count, early stop) over scripted query answers, and the Prometheus API answers it reads."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ansible.module_utils.sapphire_analysis import (
    analysis_collect,
    judge,
    parse_condition,
    parse_metrics,
    prometheus_query,
    run_analysis,
)

ARGS = {"release": "r2", "stable": "r1", "tier": "lightweight"}


def metric(**changes: Any) -> dict[str, Any]:
    return {"name": "error-rate", "query": 'errors{release="$release",tier="$tier"}', "success_condition": "<= 0.01",
            "failure_condition": "> 0.05", **changes}


def scripted(*answers: float | None) -> Callable[[str], tuple[float | None, str]]:
    """Answers in turn (None is a failed query), the last one repeated."""
    values: Iterator[float | None] = iter(answers)
    last: list[float | None] = [None]

    def query(_promql: str) -> tuple[float | None, str]:
        last[0] = next(values, last[0])
        return (None, "connection refused") if last[0] is None else (last[0], "")
    return query


def analyse(metrics: list[dict[str, Any]], query: Callable[[str], tuple[float | None, str]],
            count: int = 5) -> dict[str, Any]:
    slept: list[float] = []
    result = run_analysis(parse_metrics(metrics, ARGS), query, count=count, interval=30, sleep=slept.append,
                          now=lambda: 0.0)
    result["slept"] = slept
    return result


def test_the_arguments_are_put_into_the_queries() -> None:
    (parsed,) = parse_metrics([metric()], ARGS)
    assert parsed["query"] == 'errors{release="r2",tier="lightweight"}'
    assert parsed["success"] == ("<=", 0.01) and parsed["failure"] == (">", 0.05)
    assert parsed["failure_limit"] == 0 and parsed["consecutive_error_limit"] == 4


@pytest.mark.parametrize(("value", "success", "failure", "phase"), [
    (0.0, "<= 0.01", "> 0.05", "Successful"),
    (0.2, "<= 0.01", "> 0.05", "Failed"),
    (0.03, "<= 0.01", "> 0.05", "Inconclusive"),
    (0.03, "<= 0.01", None, "Failed"),      # only a success condition: not meeting it fails
    (0.03, None, "> 0.05", "Successful"),   # only a failure condition: not meeting it succeeds
])
def test_a_measurement_is_judged_as_argo_does(value: float, success: str | None, failure: str | None,
                                              phase: str) -> None:
    (parsed,) = parse_metrics([metric(success_condition=success, failure_condition=failure)], ARGS)
    assert judge(parsed, value) == phase


def test_a_good_release_is_successful_after_count_measurements() -> None:
    result = analyse([metric()], scripted(0.0), count=3)
    assert result["phase"] == "Successful" and len(result["metrics"][0]["measurements"]) == 3
    assert result["slept"] == [0.0, 30, 30]


def test_a_failed_measurement_fails_the_run_at_once_with_failure_limit_zero() -> None:
    result = analyse([metric(), metric(name="latency", query="latency", success_condition="<= 1",
                                       failure_condition=None)], scripted(0.0, 0.5, 0.2))
    # Round 1: error-rate 0.0 (ok), latency 0.5 (ok); round 2: error-rate 0.2 fails; latency stops there.
    assert result["phase"] == "Failed"
    assert [m["phase"] for m in result["metrics"]] == ["Failed", "Terminated"]
    assert "error-rate failed (success <= 0.01, failure > 0.05; measured 0, 0.2)" in result["msg"], result["msg"]


def test_failures_up_to_the_limit_are_tolerated() -> None:
    result = analyse([metric(failure_limit=2)], scripted(0.2, 0.2, 0.0), count=4)
    assert result["phase"] == "Successful"
    result = analyse([metric(failure_limit=2)], scripted(0.2, 0.2, 0.2), count=4)
    assert result["phase"] == "Failed" and len(result["metrics"][0]["measurements"]) == 3


def test_an_inconclusive_measurement_pauses_the_run() -> None:
    result = analyse([metric()], scripted(0.0, 0.03), count=5)
    assert result["phase"] == "Inconclusive" and result["msg"].startswith("Inconclusive: error-rate inconclusive")


def test_errors_end_the_run_only_after_more_than_the_consecutive_limit() -> None:
    result = analyse([metric()], scripted(None, None, None, None, 0.0), count=5)
    assert result["phase"] == "Successful", "4 consecutive errors are tolerated by default"
    result = analyse([metric(consecutive_error_limit=1)], scripted(0.0, None, None), count=5)
    assert result["phase"] == "Error" and "connection refused" in result["msg"]


@pytest.mark.parametrize(("change", "said"), [
    ({"success_condition": "at most 0.01"}, "metrics[0].success_condition (error-rate) must be an operator"),
    ({"success_condition": None, "failure_condition": ""}, "needs a success_condition or a failure_condition"),
    ({"query": "x{tier=\"$pool\"}"}, "uses $pool which is not an argument of the run"),
    ({"failure_limit": -1}, "metrics[0].failure_limit (error-rate) must be a whole number >= 0"),
    ({"threshold": 5}, "metrics[0] has unknown key(s) threshold"),
    ({"name": ""}, "metrics[0].name must be set and unique"),
])
def test_a_bad_metric_is_refused_naming_the_field(change: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        parse_metrics([metric(**change)], ARGS)


def test_conditions_parse_operators_and_numbers() -> None:
    assert parse_condition(">= -25", "x") == (">=", -25.0)
    assert parse_condition("< 1e-3", "x") == ("<", 0.001)
    assert parse_condition("", "x") is None


@pytest.mark.parametrize(("answer", "expected"), [
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}},
     (0.25, "")),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, (3.0, "")),
    ({"status": "success", "data": {"resultType": "vector", "result": []}},
     (None, "the query returned no sample (an empty vector)")),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}},
     (None, "the query returned NaN (no data in the window)")),
])
def test_prometheus_answers_are_read_as_the_first_sample(answer: dict[str, Any],
                                                         expected: tuple[float | None, str]) -> None:
    asked = []

    def get(url: str) -> tuple[int | None, str, str | None]:
        asked.append(url)
        return 200, json.dumps(answer), None
    assert prometheus_query("http://prom:9090/", get)("up == 1") == expected
    assert asked == ["http://prom:9090/api/v1/query?query=up+%3D%3D+1"]


def test_a_query_error_is_a_measurement_error_that_names_it() -> None:
    def get(_url: str) -> tuple[int | None, str, str | None]:
        return 400, json.dumps({"status": "error", "error": "parse error at char 3"}), None
    assert prometheus_query("http://prom:9090", get)("su(") == (None, "Prometheus answered 400: parse error at char 3")


def test_the_module_collect_reads_its_options() -> None:
    def get(_url: str, params: dict[str, Any], accept: str) -> tuple[int | None, str, str | None]:
        assert accept == "application/json" and params["connect_timeout"] == 2
        return 200, json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1, "0"]}}), None
    result = analysis_collect({"url": "http://prom:9090", "metrics": [metric()], "args": ARGS, "interval": 0,
                               "count": 2, "initial_delay": 0, "connect_timeout": 2}, get, sleep=lambda _s: None)
    assert result["phase"] == "Successful" and result["changed"] is False
