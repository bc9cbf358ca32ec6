"""sapphire_daemon restarts a process whose environment is no longer the one asked for (a rotated password), as it
does one running another command, and leaves one that matches alone."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from sapphire_testlib import run_playbook


def converge(tmp_path: Path, environment: dict[str, str], check: bool = False) -> dict[str, Any]:
    playbook = tmp_path / "daemon.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Run a daemon", "hosts": "localhost", "gather_facts": False,
                                         "tasks": [{"name": "Ensure it runs", "sapphire_daemon": {
                                             "name": "sleeper", "pidfile": str(tmp_path / "sleeper.pid"),
                                             "logfile": str(tmp_path / "sleeper.log"),
                                             "command": [sys.executable, "-c", "import time; time.sleep(120)"],
                                             "environment": environment},
                                             "register": "daemon", "no_log": True},
                                             {"name": "Show", "ansible.builtin.debug": {
                                                 "msg": "{{ daemon | to_json }}"}}]}]))
    result = run_playbook(str(playbook), "localhost,", check=check,
                          extra_vars={"ansible_connection": "local", "ansible_python_interpreter": sys.executable})
    assert result.rc == 0, result.explain()
    return json.loads(result.task_results("Show")["localhost"]["msg"])


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_a_new_environment_value_restarts_the_process_and_the_same_one_does_not(tmp_path: Path) -> None:
    first = converge(tmp_path, {"SAPPHIRE_PASSWORD": "first-Secret-1"})
    try:
        assert first["action"] == "started"
        same = converge(tmp_path, {"SAPPHIRE_PASSWORD": "first-Secret-1"})
        assert same["changed"] is False and same["pid"] == first["pid"]

        checked = converge(tmp_path, {"SAPPHIRE_PASSWORD": "rotated-Secret-2"}, check=True)
        assert checked["changed"] is True and checked["action"] == "restarted"
        assert environ(first["pid"])["SAPPHIRE_PASSWORD"] == "first-Secret-1", "--check restarted it"

        rotated = converge(tmp_path, {"SAPPHIRE_PASSWORD": "rotated-Secret-2"})
        assert rotated["action"] == "restarted" and rotated["pid"] != first["pid"]
        assert environ(rotated["pid"])["SAPPHIRE_PASSWORD"] == "rotated-Secret-2"
        assert "rotated-Secret-2" not in json.dumps(rotated)
    finally:
        pid = int((tmp_path / "sleeper.pid").read_text())
        os.kill(pid, signal.SIGTERM)
