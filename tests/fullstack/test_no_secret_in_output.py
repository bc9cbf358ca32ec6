"""No secret in any output: the playbooks the other suites do not already scan, run against the whole local default
(deployed by molecule's full-stack scenario, or by `make deploy`) at -vvv with --diff, and --check where they write.
Searched: their output and validate's JSON and JUnit reports, for every vault value, its base64 and its URL-encoded
and JSON-escaped forms. Zero hits is the bar.

Already scanned elsewhere, with the same forms: backup.yml and dr-failover.yml at -vvv as AWX jobs
(tests/integration/test_backup_restore.py, test_dr.py), emergency-stop.yml and resume.yml as AWX jobs
(test_emergency_stop.py), cleanup.yml at -vvv --check --diff (test_cleanup.py), the Redis and PostgreSQL host converges
at -vvv (test_redis_host.py, test_postgres_host.py).
"""

from __future__ import annotations

import pytest
from sapphire_testlib import REPO_ROOT, leaked_secrets, local_vault, run_playbook, secret_forms

REPORTS = REPO_ROOT / ".local" / "reports"

# (playbook, extra vars, check mode, must succeed). Those that refuse on a converged local default (nothing to roll
# back to, no failover to fail back from) still print their boilerplate plays (vault, state, topology) and their
# refusal, which is what an operator's terminal and AWX's job log keep. cluster.yml loads no vault (it needs none).
RUNS = [
    ("playbooks/cluster.yml", {}, True, True),
    ("deploy.yml", {}, True, True),
    ("validate.yml", {}, False, True),
    ("rollback.yml", {}, True, False),
    ("restore.yml", {}, True, False),
    ("dr-failback.yml", {"confirm": "local"}, True, False),
]
# The object store's access key ID is the public half of its key pair (AWS: "like a user name"); amazon.aws shows it
# in a module's arguments on purpose (no_log=False) and it is not searched for. Its secret key is.
NOT_SECRET = {"vault_backup_store_access_key"}


class Secrets(dict):
    """The vault's values; shown by name only, so a failing test's report (pytest prints its arguments) leaks none."""

    def __repr__(self) -> str:
        return f"<{len(self)} secrets: {', '.join(sorted(self))}>"


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    values = Secrets({name: value for name, value in local_vault().items() if name not in NOT_SECRET})
    assert len(values) >= 10, "the local vault should hold the platform's secrets for this test to mean anything"
    return values


@pytest.mark.parametrize(("playbook", "extra", "check", "succeeds"), RUNS, ids=[run[0] for run in RUNS])
def test_no_secret_in_the_output_at_vvv_with_diff(playbook: str, extra: dict, check: bool, succeeds: bool,
                                                   secrets: Secrets) -> None:
    result = run_playbook(playbook, extra_vars=extra or None, check=check, diff=True, verbosity=3,
                          json_output=False)
    output = result.stdout + result.stderr
    if playbook != "playbooks/cluster.yml":
        assert "Load the vaulted values" in output, "the run must have loaded the vault for this test to mean anything"
    if succeeds:
        assert result.rc == 0, output[-3000:]
    assert leaked_secrets(output, secrets) == [], f"{playbook} printed a secret at -vvv --diff"


def test_no_secret_in_validates_reports(secrets: Secrets) -> None:
    reports = [REPORTS / "validate.json", REPORTS / "validate.junit.xml"]
    assert all(path.exists() for path in reports), "validate.yml writes its reports (run it first)"
    for path in reports:
        assert leaked_secrets(path.read_text(), secrets) == [], f"{path.name} holds a secret"


def test_the_scan_finds_a_secret_in_any_of_its_forms() -> None:
    secret = "s3cr3t/va+lue=="
    for form in secret_forms(secret):
        assert leaked_secrets(f"... {form} ...", {"vault_x": secret}) == ["vault_x"]
    assert leaked_secrets("nothing here", {"vault_x": secret}) == []
    assert secret not in repr(Secrets({"vault_x": secret}))
