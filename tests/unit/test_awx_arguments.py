"""awx/configure.yml against the pinned awx.awx collection, offline: every argument of every awx.awx task is an
option (or alias) of its module, every required option is given, and every literal value of an option with choices is
one of them - what AWX would otherwise refuse only when an operator first runs it against a controller."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGURE = ROOT / "awx" / "configure.yml"


def awx_tasks() -> list[tuple[str, str, dict[str, Any]]]:
    play = yaml.safe_load(CONFIGURE.read_text())[0]
    found = []
    for task in play["tasks"]:
        for key, value in task.items():
            if key.startswith("awx.awx."):
                found.append((task["name"], key, value or {}))
    return found


TASKS = awx_tasks()


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    modules = sorted({module for _, module, _ in TASKS})
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-j", *modules],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return {name: entry["doc"]["options"] for name, entry in json.loads(result.stdout).items()}


def test_configure_uses_the_awx_modules_it_needs() -> None:
    modules = {module for _, module, _ in TASKS}
    assert {"awx.awx.credential_type", "awx.awx.credential", "awx.awx.execution_environment",
            "awx.awx.organization", "awx.awx.project", "awx.awx.job_template", "awx.awx.schedule"} <= modules


@pytest.mark.parametrize(("name", "module", "args"), TASKS, ids=[name for name, _, _ in TASKS])
def test_every_argument_is_an_option_of_the_pinned_module(docs: dict[str, Any], name: str, module: str,
                                                          args: dict[str, Any]) -> None:
    options = docs[module]
    known = {alias: option for option, spec in options.items() for alias in [option, *(spec.get("aliases") or [])]}
    unknown = sorted(set(args) - set(known))
    assert not unknown, f"{name}: {module} has no option {unknown}"
    given = {known[arg] for arg in args} | {"controller_host"}  # module_defaults of the play
    missing = [option for option, spec in options.items() if spec.get("required") and option not in given]
    assert not missing, f"{name}: {module} requires {missing}"
    for arg, value in args.items():
        choices = options[known[arg]].get("choices")
        if choices and isinstance(value, str) and "{{" not in value:
            assert value in [str(choice) for choice in choices], f"{name}: {arg}={value!r} not in {choices}"


def test_the_kubeconfig_credential_type_points_the_kubernetes_modules_at_its_file() -> None:
    (args,) = [args for _, module, args in TASKS if module == "awx.awx.credential_type"]
    assert args["injectors"]["env"]["K8S_AUTH_KUBECONFIG"] == "{% raw %}{{ tower.filename.kubeconfig }}{% endraw %}"
    assert "template.kubeconfig" in args["injectors"]["file"]
    assert args["inputs"]["fields"][0]["secret"] is True
    for prod in ("prod", "staging"):  # the inventories read that variable
        clusters = (ROOT / "inventories" / prod / "group_vars" / "clusters.yml").read_text()
        assert "K8S_AUTH_KUBECONFIG" in clusters


def test_every_credential_a_job_template_names_is_created() -> None:
    created: set[str] = set()
    play = yaml.safe_load(CONFIGURE.read_text())[0]
    for task in play["tasks"]:
        if "awx.awx.credential" in task and "loop" in task:
            created |= {item["name"] for item in task["loop"]}
        if "awx.awx.credential" in task and "loop" not in task:
            created.add(task["awx.awx.credential"]["name"])
    named = set()
    for task in play["tasks"]:
        args = next((value for key, value in task.items() if key.startswith("awx.awx.")), {}) or {}
        named |= set(args.get("credentials") or []) | set(args.get("galaxy_credentials") or [])
        if args.get("credential"):
            named.add(args["credential"])
    assert named and named <= created, sorted(named - created)
