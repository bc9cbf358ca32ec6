"""What an inventory sync (AWX's SCM inventory source: `ansible-inventory --list --export`, run without the job's Vault
credential) imports from each shipped inventory: no vaulted value and no vault_* variable - AWX cannot decrypt a vaulted
inventory (awx#4089) and would keep decrypted secrets as plain variables. The secrets are in the file
sapphire_vault_file names, which every playbook loads (playbooks/vault.yml)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from awx_job import REPO_ROOT, sync_inventory


def variables(synced: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, group in synced.items():
        if name == "_meta":
            for hostvars in group.get("hostvars", {}).values():
                found.update(hostvars)
        else:
            found.update(group.get("vars") or {})
    return found


@pytest.mark.parametrize("environment", ["local", "staging", "prod"])
def test_a_sync_without_the_vault_password_imports_no_secret(environment: str) -> None:
    synced = sync_inventory(REPO_ROOT / "inventories" / environment)
    text = json.dumps(synced)
    assert "$ANSIBLE_VAULT" not in text and "__ansible_vault" not in text
    found = variables(synced)
    assert [name for name in found if name.startswith("vault_")] == []
    # The secrets the playbooks use are references to the vault's names, resolved in the job, not values.
    for name in ("redis_password", "postgres_password", "backup_store_secret_key"):
        assert found[name].startswith("{{ vault_"), (name, found[name])
    expected = "{{ sapphire_local_dir }}/vault.yml" if environment == "local" else f"/vault/{environment}.yml'"
    assert expected in found["sapphire_vault_file"], found["sapphire_vault_file"]
    assert not (REPO_ROOT / "inventories" / environment / "group_vars" / "all" / "vault.yml").exists()


def test_a_missing_vault_file_is_refused_before_anything_naming_the_variable(tmp_path: Any) -> None:
    """prod as shipped has no vault/prod.yml in this repository: the first task refuses, naming sapphire_vault_file
    and the path, before the platform state is read (nothing reaches a cluster)."""
    from sapphire_testlib import run_playbook

    result = run_playbook("validate.yml", REPO_ROOT / "inventories" / "prod", check=True,
                          env={"SAPPHIRE_LOCAL_DIR": str(tmp_path)})
    assert result.rc != 0
    messages = " ".join(result.failure_messages())
    assert "sapphire_vault_file" in messages and str(REPO_ROOT / "vault" / "prod.yml") in messages, messages
    assert result.changed_tasks() == [] and list(tmp_path.iterdir()) == []
    tasks = [task["task"]["name"] for play in result.plays for task in play["tasks"]]
    assert tasks == ["Check that the vault file exists"], tasks


def test_an_empty_vault_file_loads_none_and_the_values_come_from_extra_vars(tmp_path: Any) -> None:
    """sapphire_vault_file="" (as -e, JSON or a survey's empty answer): no file is required or loaded, and the run
    goes on until a task needs a vault value that the extra vars did not give, which it names."""
    from sapphire_testlib import run_playbook

    result = run_playbook("validate.yml", REPO_ROOT / "inventories" / "prod", check=True,
                          extra_vars={"sapphire_vault_file": ""}, env={"SAPPHIRE_LOCAL_DIR": str(tmp_path)})
    checked = result.task_results("Check that the vault file exists")
    assert checked and not any(item.get("failed") for item in checked.values()), checked
    loaded = result.task_results("Load the vaulted values")
    assert loaded and all(item.get("skipped") for item in loaded.values()), loaded
    # Without the vault's values in the extra vars, the first task that needs one names it.
    messages = " ".join(result.failure_messages())
    assert "does not exist" not in messages and "set vault_redis_password in the vault file" in messages, messages
