"""dr-failover.yml with data services this toolkit cannot promote (the prod and staging inventories declare them
external; the kubernetes mode runs a standalone database per region): refused before any step, naming the mode,
with nothing written - never a run that promotes nothing and reports the RPO and RTO as met."""

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
