"""What the instances of one release do wrong (--misbehave), so a release analysis has something real to catch.

Standard library only: the controller's input check (filter_plugins/release_inputs.py) loads this file by path to
refuse a bad workload_misbehave before deploy.yml writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Misbehaviour:
    """What the instances of one release do wrong, so a release analysis has something real to catch."""

    release: str
    error_rate: float = 0.0  # the share of decisions that fail (sapphire_agent_errors_total)
    stale_heartbeats: bool = False  # no heartbeat, in Redis or in the metrics
    loss_per_trade: float = 0.0  # USD each of its trades loses (beyond the P&L band of a healthy release)
    latency_seconds: float = 0.0  # added to each decision's latency


MISBEHAVIOUR_FIELDS = {"release": str, "error_rate": float, "stale_heartbeats": bool, "loss_per_trade": float,
                       "latency_seconds": float}


def parse_misbehaviour(data: Any) -> Misbehaviour | None:
    """--misbehave's JSON object ({} or null: nobody misbehaves); ValueError names the bad field."""
    if not data:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object {{release, error_rate, stale_heartbeats, loss_per_trade, "
                         f"latency_seconds}}, got {data!r}")
    unknown = sorted(set(data) - set(MISBEHAVIOUR_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(MISBEHAVIOUR_FIELDS)}")
    if not isinstance(data.get("release"), str) or not data["release"]:
        raise ValueError("release must name the release that misbehaves")
    values: dict[str, Any] = {"release": data["release"]}
    for name, kind in MISBEHAVIOUR_FIELDS.items():
        if name == "release" or name not in data:
            continue
        value = data[name]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                or (name == "error_rate" and value > 1):
            raise ValueError(f"{name} must be a number {'from 0 to 1' if name == 'error_rate' else '>= 0'}, "
                             f"got {value!r}")
        values[name] = kind(value)
    return Misbehaviour(**values)
