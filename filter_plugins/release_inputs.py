"""Controller-side filters: the inputs of a release checked before deploy.yml writes anything, each problem naming
its variable.

The parsers are the ones the run itself uses, loaded by path (they are standard-library files): the release
analysis's (module_utils/sapphire_analysis.py, used by sapphire_release_analysis), the trading gate's market hours
(module_utils/sapphire_market_hours.py) and the synthetic workload's --misbehave (workload/sapphire_workload/
misbehaviour.py). Without this check a bad metric failed when the first tier's canary was already applied, and a bad
workload_misbehave when the workload's files were already written.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parent.parent


def _load(relative: str) -> ModuleType:
    """A standard-library Python file of this repository (module_utils and the workload are not importable here)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"sapphire_release_inputs_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


_analysis = _load("module_utils/sapphire_analysis.py")
_market_hours = _load("module_utils/sapphire_market_hours.py")
_misbehaviour = _load("workload/sapphire_workload/misbehaviour.py")
_service_inputs = _load("filter_plugins/service_inputs.py")  # its Prometheus duration (monitoring_* retention, for)

ANALYSIS_KEYS = ("interval", "count", "window", "initial_delay", "metrics")
# The placeholders a query may use: the run passes these (roles/agents/tasks/canary_tier.yml).
ANALYSIS_ARGS = {"release": "new", "stable": "old", "tier": "tier", "window": "2m"}


def _number(value: Any) -> float | None:
    """A number from YAML or a string (-e, a survey); None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def canary_analysis_problems(analysis: Any, name: str = "agents_canary_analysis", least_count: int = 1) -> list[str]:
    """Filter: everything wrong with a release analysis (its schedule and its metrics), each naming the field;
    least_count 0 where count 0 turns the analysis off (agents_coordinator_analysis)."""
    if not isinstance(analysis, dict):
        return [f"{name} must be a dict with {', '.join(ANALYSIS_KEYS)}, got {analysis!r}"]
    problems = []
    unknown = sorted(set(analysis) - set(ANALYSIS_KEYS))
    missing = [key for key in ANALYSIS_KEYS if key not in analysis]
    if unknown or missing:
        problems.append(f"{name} has unknown key(s) [{', '.join(unknown)}] or lacks [{', '.join(missing)}]; "
                        f"it has exactly {', '.join(ANALYSIS_KEYS)}")
    for key, least in (("interval", 1.0), ("initial_delay", 0.0)):
        value = _number(analysis.get(key, least))
        if value is None or value < least:
            problems.append(f"{name}.{key} must be a number of seconds >= {least:g}, got {analysis.get(key)!r}")
    count = _number(analysis.get("count", 1))
    if count is None or count < least_count or count != int(count):
        problems.append(f"{name}.count must be a whole number >= {least_count}, got {analysis.get('count')!r}")
    if not _service_inputs.PROMETHEUS_DURATION.match(str(analysis.get("window", ""))):
        problems.append(f"{name}.window must be a Prometheus duration such as 2m, got {analysis.get('window')!r}")
    metrics = analysis.get("metrics")
    if not isinstance(metrics, list):
        return [*problems, f"{name}.metrics must be a list of metrics, got {metrics!r}"]
    try:
        _analysis.parse_metrics(metrics, ANALYSIS_ARGS)
    except ValueError as exc:
        problems.append(f"{name}.{exc}")
    return problems


def market_hours_problems(windows: Any, name: str = "agents_gate_market_hours") -> list[str]:
    """Filter: what is wrong with the market-hours windows of the trading gate, naming the variable and the field."""
    if windows in (None, ""):
        return []
    if not isinstance(windows, list):
        return [f"{name} must be a list of {{days, start, end, timezone}} windows, got {windows!r}"]
    try:
        _market_hours.parse_market_hours(windows, name)
    except ValueError as exc:
        return [str(exc)]
    return []


def misbehaviour(value: Any, name: str = "workload_misbehave") -> dict[str, Any]:
    """Filter: the synthetic workload's misbehaviour as the dict --misbehave takes ({} for none), from YAML, JSON
    extra vars or a -e k=v string; AnsibleFilterError naming the variable and the field."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise AnsibleFilterError(f"{name} must be a JSON object, got {value!r}") from exc
    try:
        parsed = _misbehaviour.parse_misbehaviour(value)
    except ValueError as exc:
        raise AnsibleFilterError(f"{name}: {exc}") from exc
    return {} if parsed is None else dict(value)


def misbehaviour_problems(value: Any, name: str = "workload_misbehave") -> list[str]:
    """Filter: what is wrong with workload_misbehave (empty when nothing is)."""
    try:
        misbehaviour(value, name)
    except AnsibleFilterError as exc:
        return [exc.message]
    return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_canary_analysis_problems": canary_analysis_problems,
            "sapphire_market_hours_problems": market_hours_problems,
            "sapphire_misbehaviour": misbehaviour,
            "sapphire_misbehaviour_problems": misbehaviour_problems,
        }
