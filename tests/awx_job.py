"""Run a playbook the way an AWX job runs it: ansible_runner.run() with a private data dir of its own.

What AWX gives a job, and so what this harness gives it (awx/main/tasks/jobs.py builds the same layout):
- project/: a copy of the project (AWX checks the revision out per job; .local, .venv and .git are not in it);
- inventory/hosts: an executable script that prints the synced inventory as JSON (AWX's `--list` output);
- env/extravars: the job's extra vars, with awx_job_id / tower_job_id and the template's name;
- env/cmdline: --ask-vault-pass, answered through env/passwords by the Vault credential's password;
- env/envvars: the credentials' environment (e.g. K8S_AUTH_KUBECONFIG of the kubeconfig credential);
- ident = the job id: the events land in artifacts/<id>/job_events/*.json, which is what AWX stores and shows.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NOT_IN_A_PROJECT = shutil.ignore_patterns(".git", ".venv", ".local", "__pycache__", ".pytest_cache", ".ruff_cache")
# The jobs' private data dirs (a project copy, the vault password of the test, the events) are read lazily by the
# tests, so they go when the process that made them exits; SAPPHIRE_KEEP_AWX_JOBS=1 keeps them for a post-mortem.
_PRIVATE_DIRS: list[Path] = []


def _remove_private_dirs() -> None:
    if os.environ.get("SAPPHIRE_KEEP_AWX_JOBS") != "1":
        for path in _PRIVATE_DIRS:
            shutil.rmtree(path, ignore_errors=True)


atexit.register(_remove_private_dirs)


def private_data_dir(job_id: int) -> Path:
    """A new private data dir for job `job_id`, removed when this process exits."""
    path = Path(tempfile.mkdtemp(prefix=f"sapphire-awx-job-{job_id}-"))
    _PRIVATE_DIRS.append(path)
    return path


@dataclass
class AwxJob:
    job_id: int
    status: str
    rc: int
    private_data_dir: Path

    @property
    def artifacts(self) -> Path:
        return self.private_data_dir / "artifacts" / str(self.job_id)

    def stored_events(self) -> list[dict[str, Any]]:
        """The events as AWX stores them (artifacts/<id>/job_events/*.json), in order."""
        files = sorted((self.artifacts / "job_events").glob("*.json"),
                       key=lambda path: int(path.name.split("-", 1)[0]))
        return [json.loads(path.read_text()) for path in files]

    def stats(self) -> dict[str, Any]:
        """What the playbook published with set_stats (a workflow's next node gets it as extra vars)."""
        for event in self.stored_events():
            if event.get("event") == "playbook_on_stats":
                return (event.get("event_data") or {}).get("artifact_data") or {}
        return {}

    def leaked(self, secrets: dict[str, str]) -> list[str]:
        """'name in event N (type)' for every secret, its base64 or its URL-encoded form, found in any stored
        event (the JSON text AWX keeps, and that text decoded, so an escaped character hides nothing) or in the
        inventory the job was given (what the sync imported)."""
        found = []
        synced = {"event": "the synced inventory", "inventory": json.loads(
            (self.private_data_dir / "synced-inventory.json").read_text())}
        for number, event in enumerate([*self.stored_events(), synced]):
            text = json.dumps(event)
            text += "\n" + json.dumps(event, ensure_ascii=False)
            for name, value in secrets.items():
                forms = {value, base64.b64encode(value.encode()).decode(), urllib.parse.quote(value, safe=""),
                         json.dumps(value)[1:-1]}
                if value and any(form in text for form in forms):
                    found.append(f"{name} in event {number} ({event.get('event')})")
        return found

    def playbook_result(self) -> Any:
        """The job as the tests' PlaybookResult (stats per host, plays with each task's results per host), built
        from the stored events only - what AWX shows for the job."""
        from sapphire_testlib import PlaybookResult

        events = self.stored_events()
        result = PlaybookResult(rc=self.rc, stdout="".join(event.get("stdout", "") + "\n" for event in events),
                                stderr="")
        plays: dict[str, dict[str, Any]] = {}
        for event in events:
            data = event.get("event_data") or {}
            kind = event.get("event", "")
            if kind == "playbook_on_stats":
                for counter, name in (("changed", "changed"), ("failures", "failures"), ("dark", "unreachable"),
                                      ("ok", "ok"), ("skipped", "skipped"), ("rescued", "rescued"),
                                      ("ignored", "ignored")):
                    for host, count in (data.get(counter) or {}).items():
                        result.stats.setdefault(host, {})[name] = count
            elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
                play = plays.setdefault(data.get("play_uuid", ""), {"play": {"name": data.get("play")}, "tasks": {}})
                task = play["tasks"].setdefault(data.get("task_uuid", ""), {"task": {"name": data.get("task")},
                                                                             "hosts": {}})
                res = dict(data.get("res") or {})
                if kind == "runner_on_failed" and not data.get("ignore_errors"):
                    res["failed"] = True
                if kind == "runner_on_unreachable":
                    res["unreachable"] = True
                task["hosts"][data.get("host")] = res
        result.plays = [{**play, "tasks": list(play["tasks"].values())} for play in plays.values()]
        return result

    def explain(self) -> str:
        lines = [f"job {self.job_id}: status {self.status}, rc {self.rc}"]
        for event in self.stored_events():
            if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
                data = event.get("event_data") or {}
                lines.append(f"{data.get('host')}: {data.get('task')}: {(data.get('res') or {}).get('msg', '')}")
        return "\n".join(lines)


def sync_inventory(source: Path) -> dict[str, Any]:
    """What AWX's inventory sync imports from an SCM inventory source: `ansible-inventory --list --export` of it, run
    with no vault password (the sync has no Vault credential) - a vaulted value in the inventory fails it."""
    with tempfile.NamedTemporaryFile("w", prefix="sapphire-sync-", suffix=".pass") as wrong:
        wrong.write("not-the-vault-password\n")
        wrong.flush()
        env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_VAULT")}
        env.update({"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
                    "ANSIBLE_VAULT_IDENTITY_LIST": f"sync@{wrong.name}"})
        proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), "--list", "--export"],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"inventory sync of {source} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def run_job(playbook: str, inventory: dict[str, Any], *, job_id: int, extra_vars: dict[str, Any] | None = None,
            vault_password: str = "", project: Path = REPO_ROOT, env: dict[str, str] | None = None,
            template: str = "sapphire", options: list[str] | None = None, timeout: int | None = None) -> AwxJob:
    """Run `playbook` (relative to the project) as AWX job `job_id` and return its status and events. `options` are
    the job template's other settings as AWX passes them (--check for a check job, --diff, --limit, --tags, -v)."""
    private = private_data_dir(job_id)
    shutil.copytree(project, private / "project", ignore=NOT_IN_A_PROJECT, symlinks=True)
    (private / "inventory").mkdir()
    synced = private / "synced-inventory.json"  # what AWX's inventory sync stored (with _meta.hostvars)
    synced.write_text(json.dumps({"_meta": {"hostvars": {}}, **inventory}))
    script = private / "inventory" / "hosts"
    script.write_text(f"#!{sys.executable}\nimport sys\n"
                      f"sys.stdout.write(open({str(synced)!r}).read() if '--list' in sys.argv else '{{}}')\n")
    script.chmod(0o700)
    (private / "env").mkdir()
    variables = {**(extra_vars or {}), "awx_job_id": job_id, "tower_job_id": job_id,
                 "awx_job_template_name": template}
    (private / "env" / "extravars").write_text(json.dumps(variables))
    cmdline = list(options or [])
    if vault_password:
        cmdline.append("--ask-vault-pass")
        (private / "env" / "passwords").write_text(json.dumps({r"^Vault password:\s*?$": vault_password}))
    (private / "env" / "envvars").write_text(json.dumps({
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}))
    if cmdline:
        (private / "env" / "cmdline").write_text(" ".join(shlex.quote(option) for option in cmdline))
    runner = ansible_runner.run(private_data_dir=str(private), playbook=playbook, ident=str(job_id), quiet=True,
                                timeout=timeout)
    return AwxJob(job_id=job_id, status=runner.status, rc=runner.rc, private_data_dir=private)
