#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_daemon
short_description: Run a long-lived process as a daemon where the host has no systemd
description:
  - Starts a command detached from Ansible (new session, output to a log file, pid in a
    pid file) and reports C(changed=false) when a process with that pid file and the same
    command line is already running, so plays that start servers stay idempotent.
  - Used by the C(cluster) role for etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler and kwok, and by the host-mode roles on hosts without systemd
    (containers, CI). Hosts with systemd get unit files instead.
  - With O(state=stopped) the process is sent O(stop_signal), then SIGKILL after O(stop_timeout).
  - A changed command line (new flags) restarts the process.
version_added: "1.0.0"
author: sapphire-ops
options:
  name:
    description: Name of the daemon, used in messages.
    type: str
    required: true
  command:
    description: The program and its arguments. Required with O(state=started).
    type: list
    elements: str
  pidfile:
    description: Path of the pid file.
    type: path
    required: true
  logfile:
    description: File that receives the process's stdout and stderr (appended).
    type: path
  chdir:
    description: Working directory of the process.
    type: path
  environment:
    description:
      - Extra environment variables for the process.
      - A running process that started with other values of them (a rotated password, a new address) is restarted
        with state V(started), as one running another command is. The values are compared in memory, never returned.
    type: dict
    default: {}
  user:
    description: Run the process as this user (the module must run as root to switch).
    type: str
  state:
    description:
      - Whether the process should be running.
      - C(reloaded) sends SIGHUP to the running process (it re-reads its configuration and keeps its pid); a process
        that is not running, or runs another command, is started or restarted instead.
    type: str
    choices: [started, stopped, restarted, reloaded]
    default: started
  wait_for_port:
    description: After starting, wait until this TCP port on O(wait_host) accepts connections.
    type: int
  wait_host:
    description: Host for O(wait_for_port).
    type: str
    default: 127.0.0.1
  wait_timeout:
    description: Seconds to wait for the port, or for the process to stop.
    type: int
    default: 60
  stop_timeout:
    description: Seconds between O(stop_signal) and SIGKILL when stopping.
    type: int
    default: 20
  stop_signal:
    description:
      - The signal that asks the process to stop. PostgreSQL takes V(INT) as a fast shutdown (clients disconnected,
        a clean checkpoint); its V(TERM) is a smart shutdown that waits for every client to leave, so a connected
        workload would run it into SIGKILL and crash recovery.
    type: str
    choices: [TERM, INT]
    default: TERM
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - The process is not restarted if it dies; running the play again starts it.
"""

EXAMPLES = r"""
- name: Ensure etcd is running for the local-primary cluster
  sapphire_daemon:
    name: etcd
    command: [/root/.cache/sapphire-ops/kube/v1.34.4/etcd, --data-dir, /srv/etcd]
    pidfile: /srv/run/etcd.pid
    logfile: /srv/log/etcd.log
    wait_for_port: 2379

- name: Stop etcd
  sapphire_daemon:
    name: etcd
    pidfile: /srv/run/etcd.pid
    state: stopped
"""

RETURN = r"""
pid:
  description: Pid of the running process (0 when stopped).
  returned: always
  type: int
  sample: 4242
running:
  description: Whether the process runs after the task.
  returned: always
  type: bool
action:
  description: What the module did (none, started, restarted, stopped).
  returned: always
  type: str
  sample: started
log_tail:
  description: Last lines of the log file when the process failed to start.
  returned: on failure
  type: str
"""

import os
import signal
import socket
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def read_pid(pidfile: str) -> int:
    try:
        with open(pidfile, encoding="utf-8") as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def process_alive(pid: int) -> bool:
    """Whether the pid is a live process (not gone, not a zombie)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def process_environment(pid: int) -> dict[str, str] | None:
    """The environment a live process started with (/proc/<pid>/environ), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode("utf-8", "replace"): value.decode("utf-8", "replace") for key, value in pairs}


def environment_differs(pid: int, wanted: dict[str, Any]) -> bool:
    """Whether the running process was started with other values of the wanted variables (a new password, a new
    address): it is then restarted as a changed command would be. Unreadable counts as different only when variables
    are wanted."""
    if not wanted:
        return False
    current = process_environment(pid)
    return current is None or any(current.get(key) != str(value) for key, value in wanted.items())


def process_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when there is no such process."""
    if not process_alive(pid):
        return None
    for _attempt in range(20):  # the cmdline reads empty for a moment while the process execs
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:
            return None
        if raw:
            return [part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")]
        if not process_alive(pid):
            return None
        time.sleep(0.05)
    return None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(logfile: str | None, lines: int = 25) -> str:
    if not logfile:
        return ""
    try:
        with open(logfile, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def spawn(command: list[str], logfile: str | None, chdir: str | None,
          environment: dict[str, str], user: str | None) -> int:
    """Double-fork a detached process and return its pid."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(read_end)
        os.setsid()
        second = os.fork()
        if second != 0:
            os.write(write_end, str(second).encode())
            os._exit(0)
        os.close(write_end)
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            out = os.open(logfile or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            os.dup2(out, 1)
            os.dup2(out, 2)
            if chdir:
                os.chdir(chdir)
            env = dict(os.environ)
            env.update({key: str(value) for key, value in environment.items()})
            if user:
                import pwd
                entry = pwd.getpwnam(user)
                os.initgroups(user, entry.pw_gid)
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
                env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
            os.execvpe(command[0], command, env)
        except Exception as exc:  # report through the log, the parent sees the exit
            os.write(2, f"sapphire_daemon: cannot start {command[0]}: {exc}\n".encode())
        os._exit(127)
    os.close(write_end)
    os.waitpid(first, 0)
    data = b""
    while True:
        chunk = os.read(read_end, 64)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    return int(data or 0)


def stop(pid: int, timeout: int, signal_name: str = "TERM") -> None:
    try:
        os.kill(pid, getattr(signal, f"SIG{signal_name}"))
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5  # the kernel ends it at once, but not before kill() returns
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            pidfile=dict(type="path", required=True),
            logfile=dict(type="path"),
            chdir=dict(type="path"),
            environment=dict(type="dict", default={}),
            user=dict(type="str"),
            state=dict(type="str", default="started", choices=["started", "stopped", "restarted", "reloaded"]),
            wait_for_port=dict(type="int"),
            wait_host=dict(type="str", default="127.0.0.1"),
            wait_timeout=dict(type="int", default=60),
            stop_timeout=dict(type="int", default=20),
            stop_signal=dict(type="str", default="TERM", choices=["TERM", "INT"]),
        ),
        required_if=[("state", "started", ["command"]), ("state", "restarted", ["command"]),
                     ("state", "reloaded", ["command"])],
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    pidfile = params["pidfile"]
    command = params["command"] or []
    result = dict(changed=False, pid=0, running=False, action="none")

    pid = read_pid(pidfile)
    current = process_cmdline(pid)
    if current is not None and command and os.path.basename(current[0]) != os.path.basename(command[0]):
        current = None  # stale pid file: the pid now belongs to another program
    running = current is not None
    same_command = running and current == command and not environment_differs(pid, params["environment"])

    if params["state"] == "stopped":
        if running:
            result.update(changed=True, action="stopped")
            if not module.check_mode:
                stop(pid, params["stop_timeout"], params["stop_signal"])
                if process_alive(pid):
                    module.fail_json(msg=f"{name} (pid {pid}) did not stop", **result)
                os.unlink(pidfile)
        module.exit_json(**result)

    if running and same_command and params["state"] == "started":
        result.update(pid=pid, running=True)
        module.exit_json(**result)

    if running and same_command and params["state"] == "reloaded":
        # SIGHUP: the server re-reads its configuration and keeps running (Prometheus and Alertmanager do), so no
        # admin endpoint (--web.enable-lifecycle) has to be open for it. A server that is not running, or runs
        # another command, is started or restarted below instead.
        result.update(changed=True, action="reloaded", pid=pid, running=True)
        if not module.check_mode:
            os.kill(pid, signal.SIGHUP)
        module.exit_json(**result)

    result.update(changed=True, action="restarted" if running else "started")
    if module.check_mode:
        module.exit_json(**result)
    if running:
        stop(pid, params["stop_timeout"], params["stop_signal"])

    for path in (pidfile, params["logfile"]):
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(command[0]) and "/" in command[0]:
        module.fail_json(msg=f"{name}: program {command[0]} does not exist", **result)
    new_pid = spawn(command, params["logfile"], params["chdir"], params["environment"], params["user"])
    with open(pidfile, "w", encoding="utf-8") as handle:
        handle.write(f"{new_pid}\n")
    result.update(pid=new_pid, running=True)

    port = params["wait_for_port"]
    deadline = time.monotonic() + params["wait_timeout"]
    while port:
        if not process_alive(new_pid):
            result["running"] = False
            module.fail_json(msg=f"{name} exited right after start; see {params['logfile']}",
                             log_tail=log_tail(params["logfile"]), **result)
        if port_open(params["wait_host"], port):
            break
        if time.monotonic() > deadline:
            stop(new_pid, params["stop_timeout"], params["stop_signal"])
            result["running"] = False
            module.fail_json(msg=f"{name} did not listen on {params['wait_host']}:{port} "
                                 f"within {params['wait_timeout']} s; see {params['logfile']}",
                             log_tail=log_tail(params["logfile"]), **result)
        time.sleep(0.2)
    if not port:
        time.sleep(0.3)
        if not process_alive(new_pid):
            result["running"] = False
            module.fail_json(msg=f"{name} exited right after start; see {params['logfile']}",
                             log_tail=log_tail(params["logfile"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
