"""action_plugins/sapphire_direct.py: the toolkit's modules run inside the controller's worker when they would run on
the controller, with the same results, failures and hidden secrets as when they run as modules."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from sapphire_testlib import run_playbook

PLAYBOOK = "tests/unit/playbooks/direct.yml"
SECRET = "direct-0ut-of-sight"  # a test value that must not appear in any output
TASKS = ("Record a fingerprint", "Compare with the fingerprint", "Compare in an environment of its own",
         "Ask a Redis that does not answer, with a password", "List from a cluster whose kubeconfig does not exist")
VOLATILE = {"_ansible_no_log", "invocation"}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


def run(tmp_path: Path, direct: bool, port: int) -> tuple[Any, list[str]]:
    """The playbook, and one line per Python interpreter started while it ran (a sitecustomize on PYTHONPATH)."""
    work = tmp_path / ("direct" if direct else "modules")
    work.mkdir()
    (work / "watched").write_text("content\n")
    starts = work / "interpreters.log"
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import os, sys\nwith open({str(starts)!r}, 'a') as log:\n    log.write(' '.join(sys.argv[:1]) + '\\n')\n")
    result = run_playbook(PLAYBOOK, "controller,", extra_vars={
        "work": str(work), "closed_port": port, "secret": SECRET,
    }, env={"PYTHONPATH": str(hook), "SAPPHIRE_DIRECT_MODULES": "1" if direct else "0"})
    return result, starts.read_text().splitlines()


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Any, list[str]]]:
    tmp_path = tmp_path_factory.mktemp("direct")
    port = closed_port()
    return {direct: run(tmp_path, direct, port) for direct in (True, False)}


def results(result: Any) -> dict[str, dict[str, Any]]:
    return {name: {key: value for key, value in result.task_results(name)["controller"].items() if key not in VOLATILE}
            for name in TASKS}


def test_the_modules_start_no_interpreter_except_where_the_task_sets_an_environment(both: dict) -> None:
    (direct, direct_starts), (modules, module_starts) = both[True], both[False]
    assert direct.rc == 0 and modules.rc == 0, (direct.explain(), modules.explain())
    # ansible-playbook itself, then one module process per task run as a module
    assert len(module_starts) == 1 + len(TASKS), module_starts
    assert len(direct_starts) == 1 + 1, direct_starts  # only the task with an environment of its own


def test_results_and_failures_are_the_same_either_way(both: dict) -> None:
    direct, modules = results(both[True][0]), results(both[False][0])
    assert direct == modules
    assert direct["Record a fingerprint"]["changed"] is True
    assert direct["Compare with the fingerprint"]["converged"] is False
    assert direct["Compare in an environment of its own"]["converged"] is True
    listed = direct["List from a cluster whose kubeconfig does not exist"]
    assert listed["failed"] is True and "cannot load the kubeconfig" in listed["msg"], listed


def test_a_secret_argument_is_hidden_from_the_result_and_the_output(both: dict) -> None:
    for result, _ in both.values():
        assert SECRET not in result.stdout + result.stderr
    health = results(both[True][0])["Ask a Redis that does not answer, with a password"]
    assert health.get("failed") is not True, health  # an unreachable server is a failing check, not a task error
    assert any(check["status"] == "fail" for check in health["checks"]), health
