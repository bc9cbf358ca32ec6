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


# A server like PostgreSQL: SIGTERM is a "smart" shutdown that waits for its clients (here: forever), SIGINT a fast one.
SMART_SERVER = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "def fast(*_):\n"
                "    open(sys.argv[1], 'w').write('fast shutdown')\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGINT, fast)\n"
                "time.sleep(120)\n")


def alive(pid: int) -> bool:
    """Running (an ended process may stay a zombie until its new parent reaps it)."""
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def run_server(tmp_path: Path, state: str, **options: Any) -> dict[str, Any]:
    playbook = tmp_path / "server.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Run a server", "hosts": "localhost", "gather_facts": False,
                                         "tasks": [{"name": "Converge it", "sapphire_daemon": {
                                             "name": "server", "pidfile": str(tmp_path / "server.pid"),
                                             "command": [sys.executable, "-c", SMART_SERVER,
                                                         str(tmp_path / "stopped-by")],
                                             "state": state, "stop_timeout": 2, **options},
                                             "register": "daemon"},
                                             {"name": "Show", "ansible.builtin.debug": {
                                                 "msg": "{{ daemon | to_json }}"}}]}]))
    result = run_playbook(str(playbook), "localhost,",
                          extra_vars={"ansible_connection": "local", "ansible_python_interpreter": sys.executable})
    assert result.rc == 0, result.explain()
    return json.loads(result.task_results("Show")["localhost"]["msg"])


def test_a_server_stopped_with_its_fast_shutdown_signal_shuts_down_cleanly(tmp_path: Path) -> None:
    """The postgres role stops with INT (fast): the server ends on its own, not by SIGKILL after stop_timeout."""
    started = run_server(tmp_path, "started")
    stopped = run_server(tmp_path, "stopped", stop_signal="INT")
    assert stopped["action"] == "stopped"
    assert not alive(started["pid"])
    assert (tmp_path / "stopped-by").read_text() == "fast shutdown"


def test_the_default_signal_leaves_a_waiting_server_to_sigkill(tmp_path: Path) -> None:
    """What INT avoids: TERM is ignored by a server waiting for its clients, and SIGKILL ends it uncleanly."""
    started = run_server(tmp_path, "started")
    stopped = run_server(tmp_path, "stopped")
    assert stopped["action"] == "stopped"
    assert not alive(started["pid"])
    assert not (tmp_path / "stopped-by").exists()
