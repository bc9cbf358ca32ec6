"""The blue-green coordinator as the agents role renders it (agents_coordinator_blue_green): the release runs in its
color, the Service selects the color serving and the preview Service the new one; off, one Deployment as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sapphire_testlib import run_playbook
from test_network_policies import placeholder_secrets


def render(tmp_path: Path, extra: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    target = tmp_path / "agents.json"
    result = run_playbook("tests/unit/playbooks/render.yml", "inventories/local", limit="local-primary",
                          extra_vars={"render_file": str(target), "render_role": "agents",
                                      **placeholder_secrets("inventories/local"), **extra})
    assert result.rc == 0, result.explain()
    return {(item["kind"], item["metadata"]["name"]): item for item in json.loads(target.read_text())["items"]
            if item["metadata"]["name"].startswith("trading-coordinator")}


def test_the_new_color_runs_beside_the_live_one_which_keeps_the_service(tmp_path: Path) -> None:
    plan = {"color": "green", "serving": "blue", "switch": True, "releases": {"blue": "A", "green": "B"}}
    found = render(tmp_path, {"agents_coordinator_blue_green": True, "__agents_coordinator": plan,
                              "sapphire_release": "B"})
    assert set(found) == {("Deployment", "trading-coordinator-green"),
                          ("HorizontalPodAutoscaler", "trading-coordinator-green"),
                          ("PodDisruptionBudget", "trading-coordinator-green"), ("Service", "trading-coordinator"),
                          ("Service", "trading-coordinator-preview")}
    deployment = found[("Deployment", "trading-coordinator-green")]
    assert deployment["spec"]["selector"]["matchLabels"]["sapphire.io/color"] == "green"
    assert deployment["spec"]["template"]["metadata"]["labels"]["sapphire.io/color"] == "green"
    assert found[("HorizontalPodAutoscaler", "trading-coordinator-green")]["spec"]["scaleTargetRef"]["name"] == \
        "trading-coordinator-green"
    assert found[("PodDisruptionBudget", "trading-coordinator-green")]["spec"]["selector"]["matchLabels"][
        "sapphire.io/color"] == "green"
    assert found[("Service", "trading-coordinator")]["spec"]["selector"]["sapphire.io/color"] == "blue"
    assert found[("Service", "trading-coordinator-preview")]["spec"]["selector"]["sapphire.io/color"] == "green"


def test_no_service_before_the_first_color_is_ready_and_one_deployment_without_blue_green(tmp_path: Path) -> None:
    first = render(tmp_path, {"agents_coordinator_blue_green": True,
                              "__agents_coordinator": {"color": "blue", "serving": "", "switch": True,
                                                       "releases": {"blue": "A"}}})
    assert ("Service", "trading-coordinator") not in first
    assert ("Deployment", "trading-coordinator-blue") in first
    single = render(tmp_path, {})
    assert {name for kind, name in single if kind == "Deployment"} == {"trading-coordinator"}
    assert "sapphire.io/color" not in single[("Service", "trading-coordinator")]["spec"]["selector"]
    assert ("Service", "trading-coordinator-preview") not in single
