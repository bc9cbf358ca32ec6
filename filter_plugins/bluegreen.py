"""The decisions of the coordinator's blue-green release (agents_coordinator_blue_green; roles/agents, tasks
bluegreen.yml): which color a release runs in, which color the Service `trading-coordinator` sends traffic to, and the
record of both kept in the release pointer (ConfigMap sapphire-releases, key `coordinator`).

A plan is {color: the color this release runs in, serving: the color the Service selects ('' while none was ever
made live), switch: whether the Service must move to `color` once it is ready and analysed, releases: {color:
release} after this deploy, stable: the release serving now ('' on a first deploy)}. The color not serving keeps its
release running for a fast switch back (rollback.yml)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

COLORS = ("blue", "green")
COLOR_LABEL = "sapphire.io/color"
NAME = "trading-coordinator"
RECORD_KEY = "coordinator"


def _record(pointer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The coordinator record of the pointer's data ({} where none was kept)."""
    raw = (pointer or {}).get(RECORD_KEY) or ""
    if not raw:
        return {}
    try:
        record = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError as exc:
        raise AnsibleFilterError(f"the coordinator record of ConfigMap sapphire-releases is not JSON: {exc}") from exc
    active = record.get("active")
    releases = record.get("releases") or {}
    if active not in COLORS or not isinstance(releases, Mapping) or set(releases) - set(COLORS):
        raise AnsibleFilterError(f"the coordinator record of ConfigMap sapphire-releases names colors other than "
                                 f"{', '.join(COLORS)}: {raw!r}")
    return {"active": active, "releases": {color: str(release) for color, release in releases.items()}}


def _cleared(data: dict[str, str]) -> dict[str, str]:
    """The pointer's data without a coordinator record: emptied where there was one, not left out (the apply compares
    only the keys it sends, so a key left out would stay)."""
    return {**data, RECORD_KEY: ""} if data.get(RECORD_KEY) else data


def coordinator_plan(pointer: Mapping[str, Any] | None, release: Any) -> dict[str, Any]:
    """Filter: the plan of deploying `release`, from the release pointer's data (first deploy: blue, made live once
    ready; the release the live color runs: nothing to switch; another release: the other color, then the switch)."""
    release = str(release)
    record = _record(pointer)
    if not record:  # the release running before blue-green (a single Deployment), if any, is what the analysis compares
        return {"color": COLORS[0], "serving": "", "switch": True, "releases": {COLORS[0]: release},
                "stable": str((pointer or {}).get("current") or "")}
    active = record["active"]
    stable = record["releases"].get(active, "")
    if stable == release:
        return {"color": active, "serving": active, "switch": False, "releases": record["releases"], "stable": stable}
    color = COLORS[1 - COLORS.index(active)]
    return {"color": color, "serving": active, "switch": True, "releases": {**record["releases"], color: release},
            "stable": stable}


def coordinator_switched(plan: Mapping[str, Any]) -> dict[str, Any]:
    """Filter: the plan once the Service was moved to the plan's color."""
    return {**plan, "serving": plan["color"], "switch": False}


def coordinator_record(pointer: Mapping[str, Any] | None, plan: Mapping[str, Any]) -> dict[str, str]:
    """Filter: the pointer's data with the coordinator record of `plan` (the color serving, else the one live before;
    a plan never made live keeps the record as it was). No plan (blue-green off): no record; a record left from
    blue-green is dropped, as the single Deployment serves again."""
    data = {key: str(value) for key, value in (pointer or {}).items()}
    if not plan:
        return _cleared(data)
    active = plan.get("serving") or _record(pointer).get("active") or ""
    if not active:
        return data
    data[RECORD_KEY] = json.dumps({"active": active, "releases": dict(sorted(plan["releases"].items()))},
                                  sort_keys=True)
    return data


def coordinator_after_rollback(pointer: Mapping[str, Any] | None, objects: list[Mapping[str, Any]]) -> dict[str, str]:
    """Filter: the pointer's data after a rollback re-applied `objects` (a release record): the color the re-applied
    Service selects is live and the re-applied color runs the record's release; the other color is kept as it was.
    A record from before blue-green (no color Service) drops the coordinator record."""
    data = {key: str(value) for key, value in (pointer or {}).items()}
    record = _record(pointer)
    releases = dict(record.get("releases") or {})
    active = ""
    for obj in objects or []:
        name = (obj.get("metadata") or {}).get("name", "")
        if obj.get("kind") == "Service" and name == NAME:
            active = ((obj.get("spec") or {}).get("selector") or {}).get(COLOR_LABEL, "")
        elif obj.get("kind") == "Deployment" and name.startswith(NAME + "-") and name[len(NAME) + 1:] in COLORS:
            releases[name[len(NAME) + 1:]] = str(((obj.get("metadata") or {}).get("labels") or {})
                                                 .get("app.kubernetes.io/version", ""))
    if active not in COLORS:
        return _cleared(data)
    data[RECORD_KEY] = json.dumps({"active": active, "releases": dict(sorted(releases.items()))}, sort_keys=True)
    return data


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_coordinator_plan": coordinator_plan,
            "sapphire_coordinator_switched": coordinator_switched,
            "sapphire_coordinator_record": coordinator_record,
            "sapphire_coordinator_after_rollback": coordinator_after_rollback,
        }
