"""callback_plugins/sapphire_preload.py: the Jinja filters are loaded once, in ansible-playbook's main process, and not
again in the worker of every task (about 0.07 s of CPU each). Checked with a filter plugin that records the process
that loads it, in a small playbook of two tasks on three hosts."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CALLBACKS = REPO_ROOT / "callback_plugins"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

FILTER = """
import os

with open(os.environ["FILTER_LOADS_FILE"], "a") as handle:
    handle.write(f"{os.getpid()}\\n")


class FilterModule:
    def filters(self):
        return {"counted": lambda value: value}
"""

PLAYBOOK = """
- name: Template a filter in each task
  hosts: all
  gather_facts: false
  connection: local
  tasks:
    - name: One
      ansible.builtin.debug:
        msg: "{{ 1 | counted }}"
    - name: Two
      ansible.builtin.debug:
        msg: "{{ 2 | counted }}"
"""


def run(tmp_path: Path, callback_path: Path | None, beside_playbook: bool = False) -> tuple[int, list[int]]:
    """(pid of ansible-playbook, the pids of the processes that loaded the filter file)."""
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "counted.py").write_text(FILTER)
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    if beside_playbook:
        (tmp_path / "callback_plugins").symlink_to(CALLBACKS)
    loads = tmp_path / "loads"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"), "ANSIBLE_FILTER_PLUGINS": str(tmp_path / "filters"),
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                "FILTER_LOADS_FILE": str(loads)})
    if callback_path is not None:
        env["ANSIBLE_CALLBACK_PLUGINS"] = str(callback_path)
    process = subprocess.Popen([str(ANSIBLE_PLAYBOOK), "-i", "a,b,c,", "playbook.yml"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert output.count("ok: [") == 6, output
    return process.pid, [int(line) for line in loads.read_text().split()]


def test_without_the_callback_every_worker_loads_the_filters(tmp_path: Path) -> None:
    """What the callback removes: each of the six task runs loads every filter file again in its own worker."""
    main, loaded_by = run(tmp_path, callback_path=tmp_path / "no-callbacks")
    assert main not in loaded_by
    assert len(loaded_by) == 6


def test_the_callback_loads_the_filters_once_in_the_main_process(tmp_path: Path) -> None:
    """Found through the project's ansible.cfg (callback_plugins, relative to the project; playbooks/*.yml run
    directly)."""
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "ansible.cfg")
    main, loaded_by = run(tmp_path, callback_path=REPO_ROOT / config["defaults"]["callback_plugins"])
    assert loaded_by == [main]


def test_the_callback_beside_the_playbook_is_found_under_ansible_runner(tmp_path: Path) -> None:
    """AWX and ansible-runner set ANSIBLE_CALLBACK_PLUGINS to their own directory, which replaces ansible.cfg's path:
    the callback beside the root playbooks (deploy.yml, ...) is still loaded."""
    (tmp_path / "runner-callbacks").mkdir()
    main, loaded_by = run(tmp_path, callback_path=tmp_path / "runner-callbacks", beside_playbook=True)
    assert loaded_by == [main]
    assert all((REPO_ROOT / entry).is_file() for entry in ("deploy.yml", "validate.yml", "emergency-stop.yml"))
