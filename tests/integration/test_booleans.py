"""Public booleans mean the same from YAML, `-e k=v`, JSON extra vars and an AWX survey.

`-e agents_scale_to_zero=false` used to scale the live region's agents to zero: the template tested
the string "false", which is truthy. These tests pass the switches the way an operator types them
(`-e k=v`, always strings) and check what the playbooks render or refuse. No cluster is needed:
the agents and PostgreSQL objects are rendered, and bad input is refused before any play writes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sapphire_testlib import LOCAL_INVENTORY, REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.slow]


def ansible_playbook(playbook: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(LOCAL_INVENTORY), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def rendered_replicas(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"agents-{len(list(tmp_path.iterdir()))}.json"
    playbook = tmp_path / "render-agents.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the agents", "hosts": "local-primary", "gather_facts": False,
        "tasks": [{"name": "Render", "ansible.builtin.include_role": {"name": "agents", "tasks_from": "render"},
                   "vars": {"agents_manifest_file": str(out)}}]}]))
    result = ansible_playbook(playbook, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    items = json.loads(out.read_text())["items"]
    return {item["metadata"]["name"]: item["spec"].get("replicas") for item in items if item["kind"] == "Deployment"}


@pytest.mark.parametrize(("form", "zero"), [
    (["-e", "agents_scale_to_zero=false"], False),
    (["-e", "agents_scale_to_zero=no"], False),
    (["-e", '{"agents_scale_to_zero": "False"}'], False),  # a survey answer
    (["-e", '{"agents_scale_to_zero": false}'], False),
    (["-e", "agents_scale_to_zero=true"], True),
    (["-e", "agents_scale_to_zero=1"], True),
])
def test_agents_scale_to_zero_means_the_same_in_every_form(form: list[str], zero: bool, tmp_path: Path) -> None:
    replicas = rendered_replicas(tmp_path, *form)
    assert replicas["agent-momentum"] == (0 if zero else 2), replicas
    assert replicas["agent-breakout"] == (0 if zero else 1), replicas


@pytest.mark.parametrize(("value", "enforced"), [("false", False), ("no", False), ("true", True)])
def test_postgres_retention_enforce_string_forms(value: str, enforced: bool, tmp_path: Path,
                                                 playbook_runner: Any) -> None:
    from test_postgres_kubernetes import render

    objects = render(playbook_runner, tmp_path, postgres_retention_enforce=value)
    sql = "\n".join(obj["data"]["schema.sql"] for obj in objects if obj["kind"] == "ConfigMap"
                    and "schema.sql" in obj.get("data", {}))
    assert ("add_retention_policy('trades'" in sql) == enforced


SWITCHES = [("cleanup.yml", "cleanup_dry_run"), ("cleanup.yml", "cleanup_include_data"), ("backup.yml", "backup_prune"),
            ("backup.yml", "backup_verify"),
            ("dr-failover.yml", "dr_force"), ("dr-failover.yml", "dr_old_region_lost"),
            ("validate.yml", "auto_halt_on_loss"), ("restore.yml", "restore_keep_scratch"),
            ("deploy.yml", "deploy_full_check")]


def input_checks(playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Only the plays every run starts with (tagged always: the DR state and the input checks), in check mode."""
    return ansible_playbook(playbook, "--check", "--tags", "sapphire-input-checks-only", "-e", "confirm=local", *args)


@pytest.mark.parametrize(("playbook", "variable"), SWITCHES)
def test_the_documented_string_forms_are_accepted(playbook: str, variable: str) -> None:
    for value in ("true", "false", "yes", "0"):
        names = ["-e", '{"cleanup_data_names": ["data-redis-0"]}'] if variable == "cleanup_include_data" else []
        result = input_checks(playbook, "-e", f"{variable}={value}", *names)
        assert result.returncode == 0, f"-e {variable}={value}: " + result.stdout[-3000:]


@pytest.mark.parametrize(("playbook", "variable"), SWITCHES)
def test_a_boolean_that_is_not_one_is_refused_naming_it(playbook: str, variable: str) -> None:
    result = input_checks(playbook, "-e", f"{variable}=flase")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # The input check's words, or Ansible's own argument-spec validation of the role that declares it: both name it.
    assert f"{variable} must be a boolean" in output or \
        f"argument '{variable}' is of type str and we were unable to convert to bool" in output, output[-3000:]
    assert "changed=1" not in output and "changed=2" not in output


@pytest.mark.parametrize(("playbook", "setting", "named"), [
    ("backup.yml", "backup_postgres_type=weekly", "backup_postgres_type full, diff or incr"),
    ("restore.yml", "restore_target_time=yesterday", "restore_target_time an ISO 8601 time"),
    ("restore.yml", "restore_region=mars", "restore_region a region of backup_store_buckets"),
])
def test_a_backup_or_restore_setting_that_is_nonsense_is_refused_naming_it(playbook: str, setting: str,
                                                                           named: str) -> None:
    result = input_checks(playbook, "-e", setting)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert named in output and "Nothing was written" in output, output[-3000:]
    assert "changed=1" not in output and "changed=2" not in output


def test_an_empty_restore_region_means_the_live_region() -> None:
    """An AWX survey's unanswered optional question arrives as '': restore_region is then the live region."""
    result = input_checks("restore.yml", "-e", "restore_region=")
    assert result.returncode == 0, result.stdout[-3000:]
