"""The NetworkPolicies the namespace role renders are accepted by a real API server (the local default's
kube-apiserver, server-side dry run, nothing stored): with the lists prod and staging declare, and with a public
exchange range beside 0.0.0.0/0 minus the private networks (the API server refuses an `except` outside its `cidr`).
What they admit is proved by the evaluator: tests/unit/test_network_policies.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sapphire_testlib import REPO_ROOT, LocalClusters, run_playbook

DECLARED = {"namespace_exchange_egress_cidrs": ["203.0.113.0/24", "0.0.0.0/0"],
            "namespace_api_ingress_cidrs": ["198.51.100.0/24"], "namespace_api_ingress_namespaces": ["ops"],
            "namespace_grafana_ingress_cidrs": ["10.1.0.0/16"], "namespace_kube_api_cidrs": ["10.96.0.1/32"],
            "namespace_alert_egress_cidrs": ["149.154.160.0/20"], "namespace_external_data_cidrs": ["10.20.0.0/24"]}


@pytest.mark.parametrize(("inventory", "host", "extra"), [
    ("inventories/prod", "gke-us-east1", {}),
    ("inventories/staging", "gke-staging-east", {}),
    ("inventories/local", "local-primary", DECLARED),
])
def test_the_rendered_policies_are_accepted_by_the_api_server(tmp_path: Path, local_clusters: LocalClusters,
                                                              inventory: str, host: str, extra: dict[str, Any]) -> None:
    text = (REPO_ROOT / inventory / "group_vars" / "all" / "main.yml").read_text()
    placeholders = {name: "render-only" for name in set(re.findall(r"\bvault_\w+", text))}
    target = tmp_path / "objects.json"
    result = run_playbook("tests/unit/playbooks/render.yml", inventory, limit=host, extra_vars={
        "render_role": "namespace", "render_file": str(target), "sapphire_namespace": "default", **placeholders,
        **extra})
    assert result.rc == 0, result.explain()
    policies = [item for item in json.loads(target.read_text())["items"] if item["kind"] == "NetworkPolicy"]
    manifest = tmp_path / "policies.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}))
    applied = local_clusters.kubectl("local-primary", "apply", "--server-side", "--dry-run=server", "-f",
                                     str(manifest), check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("serverside-applied (server dry run)") == len(policies) > 10, applied.stdout
