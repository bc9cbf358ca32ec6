"""sapphire_k8s_apply (action_plugins/sapphire_k8s_apply.py): what it refuses before reading or writing anything, and
what its failure shows (not the objects, even without no_log). Reading and applying only what drifted, against a real
API server: tests/integration/test_deploy.py::test_a_deploy_writes_only_the_objects_that_drifted_and_puts_them_back."""

from __future__ import annotations

import base64
from pathlib import Path

from sapphire_testlib import run_playbook

PLAYBOOK = "tests/unit/playbooks/k8s_apply.yml"
SECRET = "apply-0ut-of-sight"


def test_an_object_without_a_name_is_refused_naming_its_place_in_the_definition(tmp_path: Path) -> None:
    result = run_playbook(PLAYBOOK, "controller,", extra_vars={"work": str(tmp_path), "secret": SECRET})
    task = result.task_results("Apply an object without a name")["controller"]
    assert task["failed"] and "definition[1] has no apiVersion, kind or metadata.name" in task["msg"], task
    assert "changed" not in task or task["changed"] is False


def test_a_cluster_that_cannot_be_read_fails_the_task_without_showing_the_objects(tmp_path: Path) -> None:
    result = run_playbook(PLAYBOOK, "controller,", extra_vars={"work": str(tmp_path), "secret": SECRET}, verbosity=3)
    task = result.task_results("Apply to a cluster whose kubeconfig does not exist")["controller"]
    assert task["failed"], task
    output = result.stdout + result.stderr
    assert SECRET not in output
    assert base64.b64encode(SECRET.encode()).decode() not in output
