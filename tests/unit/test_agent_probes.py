"""The coordinator's and the agents' probes as the agents role renders them: readiness follows the dependencies,
liveness only whether the process answers, so a Redis or PostgreSQL outage takes the pods out of service without a
restart storm."""

from __future__ import annotations

import json
from pathlib import Path

from sapphire_testlib import run_playbook
from test_network_policies import placeholder_secrets


def test_liveness_is_not_the_dependency_health_check(tmp_path: Path) -> None:
    target = tmp_path / "agents.json"
    result = run_playbook("tests/unit/playbooks/render.yml", "inventories/local", limit="local-primary",
                          extra_vars={"render_file": str(target),
                                      "render_role": "agents", **placeholder_secrets("inventories/local")})
    assert result.rc == 0, result.explain()
    workloads = [item for item in json.loads(target.read_text())["items"] if item["kind"] == "Deployment"]
    assert {item["metadata"]["name"] for item in workloads} >= {"trading-coordinator"}
    assert len(workloads) > 1  # the coordinator and the agents
    for item in workloads:
        container = item["spec"]["template"]["spec"]["containers"][0]
        readiness, liveness = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        name = item["metadata"]["name"]
        assert readiness["path"] in ("/health", "/healthz"), name
        assert liveness["path"] == "/livez", name
        assert liveness["port"] == readiness["port"], name
        assert container["livenessProbe"]["failureThreshold"] >= 3, name
