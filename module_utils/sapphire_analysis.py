# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A release analysis against Prometheus, after Argo Rollouts' AnalysisRun.

Each metric is a PromQL query (with $release, $stable and $tier replaced by the run's arguments) measured `count`
times, `interval` seconds apart. A measurement is the query's first sample:
- failed when it meets the metric's failure condition;
- else successful when it meets its success condition;
- else inconclusive (both conditions given, neither met), or failed (only a success condition given), or successful
  (only a failure condition given);
- an error when the query fails or returns no number (an empty vector, NaN).
A metric is Failed once it has more failed measurements than its failure_limit (default 0), Inconclusive once it has
more inconclusive ones than its inconclusive_limit (default 0), Error once it has more consecutive errors than its
consecutive_error_limit (default 4), and Successful when its count is reached without any of these. The run is Failed
or Error as soon as one metric is (the others stop), Inconclusive when one metric is and none failed, else Successful.
"""

from __future__ import annotations

import json
import math
import operator
import re
import string
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq, "!=": operator.ne}
CONDITION = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*$")
METRIC_DEFAULTS = {"failure_limit": 0, "inconclusive_limit": 0, "consecutive_error_limit": 4}
METRIC_KEYS = {"name", "query", "success_condition", "failure_condition", *METRIC_DEFAULTS}
TERMINAL = ("Failed", "Error", "Inconclusive")

ANALYSIS_SPEC: dict[str, dict[str, Any]] = {
    "metrics": {"type": "list", "elements": "dict", "required": True},
    "args": {"type": "dict", "default": {}},
    "interval": {"type": "float", "default": 60.0},
    "count": {"type": "int", "default": 5},
    "initial_delay": {"type": "float", "default": 0.0},
}


def parse_condition(text: Any, where: str) -> tuple[str, float] | None:
    """'>= 0.99' -> ('>=', 0.99); None for an empty condition; ValueError naming `where`."""
    if text is None or str(text).strip() == "":
        return None
    match = CONDITION.match(str(text))
    if not match:
        raise ValueError(f"{where} must be an operator (<, <=, >, >=, ==, !=) and a number, such as '<= 0.01'; "
                         f"got {text!r}")
    return match.group(1), float(match.group(2))


def parse_metrics(metrics: list[Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics with their conditions parsed, limits defaulted and arguments in the query; ValueError naming
    metrics[i].<field>."""
    parsed, names = [], set()
    for index, metric in enumerate(metrics):
        where = f"metrics[{index}]"
        if not isinstance(metric, dict):
            raise ValueError(f"{where} must be a dict with name, query and a success or failure condition")
        unknown = sorted(set(metric) - METRIC_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)} ({', '.join(sorted(METRIC_KEYS))})")
        name = str(metric.get("name") or "")
        if not name or name in names:
            raise ValueError(f"{where}.name must be set and unique, got {name!r}")
        names.add(name)
        if not str(metric.get("query") or "").strip():
            raise ValueError(f"{where}.query ({name}) must be a PromQL query")
        try:
            query = string.Template(str(metric["query"])).substitute({key: str(value) for key, value in args.items()})
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{where}.query ({name}) uses ${exc.args[0] if isinstance(exc, KeyError) else '?'} "
                             f"which is not an argument of the run ({', '.join(sorted(args)) or 'none'}); "
                             "write $$ for a literal $") from exc
        success = parse_condition(metric.get("success_condition"), f"{where}.success_condition ({name})")
        failure = parse_condition(metric.get("failure_condition"), f"{where}.failure_condition ({name})")
        if success is None and failure is None:
            raise ValueError(f"{where} ({name}) needs a success_condition or a failure_condition")
        limits = {}
        for key, default in METRIC_DEFAULTS.items():
            value = metric.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{key} ({name}) must be a whole number >= 0, got {value!r}")
            limits[key] = value
        parsed.append({"name": name, "query": query, "success": success, "failure": failure, **limits})
    if not parsed:
        raise ValueError("metrics must list at least one metric")
    return parsed


def judge(metric: dict[str, Any], value: float) -> str:
    """Successful, Failed or Inconclusive for one measured value."""
    def met(condition: tuple[str, float] | None) -> bool:
        return condition is not None and OPERATORS[condition[0]](value, condition[1])

    if met(metric["failure"]):
        return "Failed"
    if met(metric["success"]):
        return "Successful"
    if metric["success"] is not None and metric["failure"] is not None:
        return "Inconclusive"
    return "Failed" if metric["success"] is not None else "Successful"


def assess(metric: dict[str, Any], measurements: list[dict[str, Any]], count: int) -> str:
    """The metric's phase after these measurements: Running until its count is reached or a limit is passed."""
    phases = [item["phase"] for item in measurements]
    if phases.count("Failed") > metric["failure_limit"]:
        return "Failed"
    errors = 0
    for phase in reversed(phases):
        if phase != "Error":
            break
        errors += 1
    if errors > metric["consecutive_error_limit"]:
        return "Error"
    if phases.count("Inconclusive") > metric["inconclusive_limit"]:
        return "Inconclusive"
    return "Successful" if len(phases) >= count else "Running"


def measure(metric: dict[str, Any], query: Callable[[str], tuple[float | None, str]], now: float) -> dict[str, Any]:
    value, error = query(metric["query"])
    if error or value is None:
        return {"at": now, "value": None, "phase": "Error", "message": error or "the query returned no sample"}
    return {"at": now, "value": value, "phase": judge(metric, value), "message": ""}


def prometheus_query(base_url: str, get: Callable[[str], tuple[int | None, str, str | None]]
                     ) -> Callable[[str], tuple[float | None, str]]:
    """A function running an instant query: (first sample's value, '') or (None, why not)."""
    def run(promql: str) -> tuple[float | None, str]:
        status, body, error = get(f"{base_url.rstrip('/')}/api/v1/query?{urlencode({'query': promql})}")
        if error:
            return None, error
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        if status != 200 or data.get("status") != "success":
            return None, f"Prometheus answered {status}: {data.get('error') or body[:200]}"
        result = data["data"]["result"]
        if data["data"]["resultType"] == "scalar":
            raw = result[1]
        elif result:
            raw = result[0]["value"][1]
        else:
            return None, "the query returned no sample (an empty vector)"
        value = float(raw)
        return (None, "the query returned NaN (no data in the window)") if math.isnan(value) else (value, "")
    return run


def describe(metric: dict[str, Any]) -> str:
    said = [f"{label} {cond[0]} {cond[1]:g}" for label, cond in (("success", metric["success"]),
                                                                 ("failure", metric["failure"])) if cond]
    return ", ".join(said)


def run_analysis(metrics: list[dict[str, Any]], query: Callable[[str], tuple[float | None, str]], *, count: int,
                 interval: float, initial_delay: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Measure every metric until the run ends; the module's result."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if interval < 0 or initial_delay < 0:
        raise ValueError("interval and initial_delay must be zero or more seconds")
    sleep(initial_delay)
    results = [{"name": metric["name"], "query": metric["query"], "conditions": describe(metric),
                "phase": "Running", "measurements": []} for metric in metrics]
    for round_index in range(count):
        if round_index:
            sleep(interval)
        for metric, result in zip(metrics, results, strict=True):
            if result["phase"] != "Running":
                continue
            result["measurements"].append(measure(metric, query, now()))
            result["phase"] = assess(metric, result["measurements"], count)
        if any(result["phase"] in ("Failed", "Error") for result in results):
            break
        if all(result["phase"] != "Running" for result in results):
            break
    for result in results:
        if result["phase"] == "Running":
            result["phase"] = "Terminated"  # stopped because another metric failed
    phases = [result["phase"] for result in results]
    phase = next((item for item in ("Error", "Failed", "Inconclusive") if item in phases), "Successful")
    bad = [result for result in results if result["phase"] in TERMINAL]
    if phase == "Successful":
        msg = "Successful: " + "; ".join(f"{result['name']} {len(result['measurements'])} measurement(s) "
                                         f"({result['conditions']})" for result in results)
    else:
        msg = f"{phase}: " + "; ".join(
            f"{result['name']} {result['phase'].lower()} ({result['conditions']}; measured "
            + ", ".join("error" if item["value"] is None else f"{item['value']:.6g}"
                        for item in result["measurements"])
            + (f"; {result['measurements'][-1]['message']}" if result["measurements"][-1]["message"] else "") + ")"
            for result in bad)
    return {"changed": False, "phase": phase, "metrics": results, "msg": msg}


def analysis_collect(params: dict[str, Any], get: Callable[..., tuple[int | None, str, str | None]],
                     sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.time
                     ) -> dict[str, Any]:
    metrics = parse_metrics(params["metrics"], params["args"])
    query = prometheus_query(params["url"], lambda url: get(url, params, "application/json"))
    return run_analysis(metrics, query, count=params["count"], interval=params["interval"],
                        initial_delay=params["initial_delay"], sleep=sleep, now=now)
