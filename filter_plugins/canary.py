"""The decisions of a canary release (deploy.yml -e deploy_strategy=canary; roles/agents, entry point canary): the order
of the tiers, the canary Deployments beside the stable ones, what the synthetic workload simulates meanwhile, and the
outcome recorded in the release history."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

CANARY_SUFFIX = "-canary"
TRACK_LABEL = "sapphire.io/track"
OUTCOMES_KEPT = 20


def canary_tiers(agents: list[Mapping[str, Any]], tiers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Filter: the tiers to release one after the other: those with a running agent, in agent_tiers' order, the tiers
    with an accelerator last (the most expensive to get wrong)."""
    running = {str(agent.get("tier")) for agent in agents or [] if int(agent.get("replicas", 1) or 0) > 0}
    order = list(tiers or {})
    return sorted((tier for tier in order if tier in running),
                  key=lambda tier: ("accelerator" in (tiers[tier] or {}), order.index(tier)))


def canary_state(deployments: list[Mapping[str, Any]], release: str) -> dict[str, Any]:
    """Filter: a tier's agent Deployments as read: the stable ones with their replicas, the canaries, and whether the
    tier is promoted already (every stable one at `release`, no canary left: a re-run skips it)."""
    stable, canaries = {}, []
    for item in deployments or []:
        metadata = item.get("metadata") or {}
        if (metadata.get("labels") or {}).get(TRACK_LABEL) == "canary":
            canaries.append(metadata["name"])
        else:
            stable[metadata["name"]] = {"replicas": int((item.get("spec") or {}).get("replicas", 1) or 0),
                                        "release": (metadata.get("labels") or {}).get("app.kubernetes.io/version")}
    promoted = bool(stable) and not canaries and all(item["release"] == str(release) for item in stable.values())
    return {"stable": stable, "canaries": sorted(canaries), "promoted": promoted}


def canary_objects(rendered: list[Mapping[str, Any]], accelerated: bool = False) -> list[dict[str, Any]]:
    """Filter: one canary Deployment per rendered agent Deployment that runs (the new release): <name>-canary with one
    replica, labelled and selected by sapphire.io/track=canary, without the desired-replicas annotation. A tier with an
    accelerator has no spare devices: its canary replaces one stable replica (the caller scales the stable one down)."""
    found = []
    for item in rendered or []:
        if item.get("kind") != "Deployment" or (item.get("spec") or {}).get("replicas", 1) == 0:
            continue  # an agent at zero replicas (or no workload) has nothing to compare
        canary = copy.deepcopy(dict(item))
        metadata = canary["metadata"]
        metadata["name"] = metadata["name"] + CANARY_SUFFIX
        metadata["labels"] = {**metadata.get("labels", {}), TRACK_LABEL: "canary"}
        metadata.get("annotations", {}).pop("sapphire.io/desired-replicas", None)
        spec = canary["spec"]
        spec["replicas"] = 1
        spec["selector"]["matchLabels"] = {**spec["selector"]["matchLabels"], TRACK_LABEL: "canary"}
        spec["template"]["metadata"]["labels"] = {**spec["template"]["metadata"]["labels"], TRACK_LABEL: "canary"}
        if accelerated:
            spec["strategy"] = {"type": "Recreate"}
        found.append(canary)
    return found


def canary_ensemble(agents: list[Mapping[str, Any]], stable: str, release: str, promoted: list[str],
                    canary_tier: str = "") -> list[dict[str, Any]]:
    """Filter: what the synthetic workload simulates during a canary: every agent at its release (the new one in the
    promoted tiers, else the stable one) and, for canary_tier, one canary instance per agent at the new release.

    A canary instance is its agent, as a canary pod is (AGENT_NAME is the agent's): it beats, trades and keeps
    positions under the agent's name and differs by its release label only. So a canary leaves no heartbeat of an
    agent that is not in trading_agents behind (which validate warns of as heartbeat_unexpected)."""
    ensemble = []
    for agent in agents or []:
        tier = str(agent.get("tier"))
        ensemble.append({**agent, "release": release if tier in (promoted or []) else stable})
        if tier == canary_tier and int(agent.get("replicas", 1) or 0) > 0:
            ensemble.append({**agent, "replicas": 1, "release": release})
    return ensemble


def canary_outcome(data: Mapping[str, Any] | None, outcome: Mapping[str, Any]) -> dict[str, str]:
    """Filter: the release pointer's data with `outcome` ({release, tier, phase, ...}) appended to its canary history
    (the newest 20 kept), everything else as it was."""
    data = dict(data or {})
    try:
        history = json.loads(data.get("canary") or "[]")
    except ValueError as exc:
        raise AnsibleFilterError(f"the canary history of ConfigMap sapphire-releases is not JSON: {exc}") from exc
    data["canary"] = json.dumps([*history, dict(outcome)][-OUTCOMES_KEPT:])
    return {key: str(value) for key, value in data.items()}


def release_plan(pointers: list[Any], release: Any, strategy: Any = "rolling") -> dict[str, Any]:
    """Filter: what a deploy of `release` does, from each cluster's read of ConfigMap sapphire-releases (a
    sapphire_k8s_list result; undefined or failed where the cluster does not exist yet).

    {running: the releases the clusters run (sorted, no empty), changes: whether any cluster runs another release
    (the trading gate asks then), stable: the release canaries are compared with ('' for a rolling deploy, a first
    deploy or the release already running: applied at once)}."""
    running = sorted({str((item.get("data") or {}).get("current") or "")
                      for pointer in pointers if isinstance(pointer, Mapping)
                      for item in pointer.get("resources") or []} - {""})
    release = str(release)
    changes = any(name != release for name in running)
    stable = running[0] if str(strategy) == "canary" and len(running) == 1 and changes else ""
    return {"running": running, "changes": changes, "stable": stable}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_release_plan": release_plan,
            "sapphire_canary_tiers": canary_tiers,
            "sapphire_canary_objects": canary_objects,
            "sapphire_canary_state": canary_state,
            "sapphire_canary_ensemble": canary_ensemble,
            "sapphire_canary_outcome": canary_outcome,
        }
