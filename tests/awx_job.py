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

import base64
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NOT_IN_A_PROJECT = shutil.ignore_patterns(".git", ".venv", ".local", "__pycache__", ".pytest_cache", ".ruff_cache")


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
        """'name in event N (type)' for every secret, or its base64, found in any stored event."""
        found = []
        for number, event in enumerate(self.stored_events()):
            text = json.dumps(event)
            for name, value in secrets.items():
                encoded = base64.b64encode(value.encode()).decode()
                if value and (value in text or encoded in text):
                    found.append(f"{name} in event {number} ({event.get('event')})")
        return found

    def explain(self) -> str:
        lines = [f"job {self.job_id}: status {self.status}, rc {self.rc}"]
        for event in self.stored_events():
            if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
                data = event.get("event_data") or {}
                lines.append(f"{data.get('host')}: {data.get('task')}: {(data.get('res') or {}).get('msg', '')}")
        return "\n".join(lines)


def run_job(playbook: str, inventory: dict[str, Any], *, job_id: int, extra_vars: dict[str, Any] | None = None,
            vault_password: str = "", project: Path = REPO_ROOT, env: dict[str, str] | None = None,
            template: str = "sapphire") -> AwxJob:
    """Run `playbook` (relative to the project) as AWX job `job_id` and return its status and events."""
    private = Path(tempfile.mkdtemp(prefix=f"sapphire-awx-job-{job_id}-"))
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
    if vault_password:
        (private / "env" / "cmdline").write_text("--ask-vault-pass")
        (private / "env" / "passwords").write_text(json.dumps({r"^Vault password:\s*?$": vault_password}))
    (private / "env" / "envvars").write_text(json.dumps({
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}))
    runner = ansible_runner.run(private_data_dir=str(private), playbook=playbook, ident=str(job_id), quiet=True)
    return AwxJob(job_id=job_id, status=runner.status, rc=runner.rc, private_data_dir=private)
