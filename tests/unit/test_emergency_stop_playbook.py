"""emergency-stop.yml is a kill switch: nothing slow or blocking comes before the halt. It loads the vault (the Redis
password) and checks its input, then the agents role's stop - no platform state read, no operations lock, no fact
gathering first (issue 16). The halt itself is the first task of the role's entry point that reaches a server."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO_ROOT / "playbooks"


def test_nothing_reads_the_state_or_takes_the_lock_before_the_stop() -> None:
    plays = yaml.safe_load((PLAYBOOKS / "emergency-stop.yml").read_text())
    imports = [play["ansible.builtin.import_playbook"] for play in plays if "ansible.builtin.import_playbook" in play]
    assert imports == ["vault.yml"], imports
    stop_at = next(index for index, play in enumerate(plays)
                   if any(task.get("ansible.builtin.include_role", {}).get("tasks_from") == "emergency_stop"
                          for task in play.get("tasks", [])))
    for play in plays[:stop_at + 1]:
        if "hosts" not in play:
            continue
        assert play.get("gather_facts") is False, play["name"]
        assert not play.get("roles"), play["name"]
        for task in play.get("tasks", []):
            module = next(key for key in task if key.startswith("ansible.builtin."))
            assert module in {"ansible.builtin.assert", "ansible.builtin.set_fact",
                              "ansible.builtin.include_role"}, (play["name"], task["name"])


def test_the_halt_is_the_first_task_of_the_role_that_reaches_a_server() -> None:
    tasks = yaml.safe_load((REPO_ROOT / "roles" / "agents" / "tasks" / "emergency_stop.yml").read_text())
    assert "sapphire_emergency_stop" in tasks[0], tasks[0]["name"]
