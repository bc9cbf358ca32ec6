"""dr-failover.yml with data services this toolkit cannot promote: refused before any step, naming the mode, with
nothing written - never a run that promotes nothing and reports the RPO and RTO as met (external mode without endpoints
per region; the kubernetes mode runs a standalone database per region). And the prod and staging inventories as
shipped (managed Cloud SQL and Memorystore): --check lists the provider steps, backup.yml names what the provider
keeps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from sapphire_testlib import run_playbook

pytestmark = [pytest.mark.slow]

CONFIRM = {"confirm": "test"}  # the confirmation of a disruptive run (sapphire_environment test)


@pytest.mark.parametrize(("postgres_mode", "redis_mode", "expected"), [
    ("external", "external", ["postgres_mode external", "redis_mode external"]),
    ("kubernetes", "kubernetes", ["postgres_mode kubernetes", "would land on an empty one"]),
])
def test_a_failover_of_services_it_cannot_promote_is_refused_before_any_step(
        postgres_mode: str, redis_mode: str, expected: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="sapphire-dr-modes-"))
    local_dir = root / "local"
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"controller": {}}, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "postgres_mode": postgres_mode, "redis_mode": redis_mode, "sapphire_state_store": "file",
        "sapphire_local_dir": str(local_dir), "sapphire_environment": "test"}}}))
    result = run_playbook("dr-failover.yml", inventory, extra_vars=CONFIRM)
    assert result.rc != 0, "a failover that can promote nothing went ahead"
    messages = " ".join(" ".join(result.failure_messages()).split())
    assert "Refused before any step" in messages, result.explain()
    for text in expected:
        assert text in messages, messages
    assert result.changed == 0, result.changed_tasks()
    assert not (local_dir / "dr" / "state.yml").exists(), "the platform state was written"
    assert not list(local_dir.glob("reports/*")), "a drill report was written"


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_the_managed_environments_list_the_provider_steps_under_check(environment: str) -> None:
    """inventories/prod and staging as shipped (Cloud SQL and Memorystore endpoints per region), under --check from a
    machine that reaches neither their clusters nor their data services (the read-only run uses an empty cache; the
    vault is a file of this test's that sapphire_vault_file names): dr-failover lists the steps it would take - the
    fence, then what the operator promotes in which provider - and refuses because the endpoints do not answer;
    backup.yml does not fail every hour, it says the providers keep the backups."""
    local_dir = Path(tempfile.mkdtemp(prefix=f"sapphire-{environment}-check-"))
    env = {"SAPPHIRE_LOCAL_DIR": str(local_dir)}
    inventory = Path(__file__).resolve().parents[2] / "inventories" / environment
    vault = {f"vault_{name}": "not-a-secret" for name in (
        "redis_password", "postgres_password", "postgres_replication_password", "postgres_agent_password",
        "postgres_coordinator_password", "postgres_monitor_password", "exchange_api_key",
        "exchange_api_secret", "telegram_bot_token", "grafana_admin_password", "backup_store_access_key",
        "backup_store_secret_key")}
    (local_dir / "vault.yml").write_text(yaml.safe_dump(vault))
    vault = {"sapphire_vault_file": str(local_dir / "vault.yml")}
    failover = run_playbook("dr-failover.yml", inventory, extra_vars={"confirm": environment, **vault}, check=True,
                            env=env)
    assert failover.rc != 0
    walk = " ".join(failover.stdout.split())
    east, west = ("us-east1", "us-west1") if environment == "prod" else ("staging-east", "staging-west")
    for expected in (f"would forbid the application login of PostgreSQL cloudsql-{east} (cloudsql, over the network",
                     f"ask the operator to promote PostgreSQL cloudsql-{west}",
                     "in cloudsql: promote the cross-region replica", f"Redis memorystore-{west}",
                     "in memorystore: fail over", "dr_promoted_in_provider=true",
                     f"Redis memorystore-{east} stays a primary fenced by the halt flag only"):
        assert expected in walk, (expected, failover.explain())
    assert "does not answer: there is nothing to promote" in " ".join(" ".join(failover.failure_messages()).split())
    # The data services only: the Kubernetes state goes into the GCS buckets, which this machine cannot reach.
    backup = run_playbook("backup.yml", inventory, extra_vars={**vault, "backup_components": ["postgres", "redis"]},
                          check=True, env=env)
    assert backup.rc == 0, backup.explain()
    shown = " ".join(str(item.get("msg", "")) for item in backup.task_results("Show what was backed up").values())
    assert "postgres: NOT backed up by this toolkit: its provider (cloudsql)" in shown, shown
    assert "redis: NOT backed up by this toolkit: its provider (memorystore)" in shown, shown
    assert backup.changed == 0 and not (local_dir / "backups").exists()
