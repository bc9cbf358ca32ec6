"""The AWX job harness (tests/awx_job.py) on a playbook of its own: a job gets its extra vars and job id, the synced
inventory through an executable script (which the project's ansible.cfg must allow), a vaulted value decrypted with
the Vault credential's password answered at the prompt, publishes set_stats, and no stored event holds the secret or
its base64. The harness runs the toolkit's playbooks the same way."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from awx_job import VENV_BIN, run_job


def test_a_job_decrypts_the_vault_publishes_its_stats_and_stores_no_secret(tmp_path: Path) -> None:
    password, secret = f"vault-{uuid.uuid4().hex}", f"secret-{uuid.uuid4().hex}"
    plain = tmp_path / "vault.yml"
    plain.write_text(f"awx_test_secret: {secret}\n")
    (tmp_path / "pass").write_text(password)
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(tmp_path / "pass"),
                    str(plain)], check=True, capture_output=True, cwd=tmp_path)  # no project ansible.cfg
    assert secret not in plain.read_text()
    inventory = {"all": {"children": ["awx_targets"]},
                 "awx_targets": {"hosts": ["trader-east"], "vars": {"ansible_connection": "local",
                                                                    "awx_test_vault_file": str(plain)}},
                 "_meta": {"hostvars": {"trader-east": {"sapphire_region": "primary",
                                                        "ansible_python_interpreter": str(VENV_BIN / "python")}}}}
    job = run_job("tests/integration/playbooks/awx_job.yml", inventory, job_id=4242, vault_password=password)
    assert job.status == "successful" and job.rc == 0, job.explain()
    assert job.artifacts.joinpath("job_events").is_dir() and job.stored_events()
    assert job.stats() == {"awx_test_report": {"job": 4242, "host": "trader-east", "region": "primary",
                                               "secret_length": len(secret)}}
    assert job.leaked({"awx_test_secret": secret, "vault password": password}) == []
    # The harness finds a secret where an event shows one.
    shown = run_job("tests/integration/playbooks/awx_job.yml", inventory, job_id=4243, vault_password=password,
                    extra_vars={"awx_test_shown": secret})
    assert shown.leaked({"awx_test_secret": secret})
