"""The AWX execution environment builds from awx/execution-environment.yml: `ansible-builder create` (the image build
itself needs a registry this machine cannot reach) generates a context whose interpreter runs ansible-core 2.19, with
the run-time requirements only and the clients by each platform's package name."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDER = Path(sys.executable).parent / "ansible-builder"
DEV_TOOLS = {"pytest", "pytest-xdist", "pytest-testinfra", "molecule", "ansible-lint", "yamllint", "ruff",
             "matplotlib", "moto", "ansible-builder", "ansible"}
# Import name -> distribution name, for the third-party imports of the content the controller runs.
DISTRIBUTIONS = {"kubernetes": "kubernetes", "redis": "redis", "psycopg": "psycopg", "botocore": "botocore",
                 "boto3": "boto3", "requests": "requests", "jinja2": "jinja2", "yaml": "ansible-core",
                 "cryptography": "cryptography", "prometheus_client": "prometheus_client"}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            found[match.group(1).lower()] = match.group(3)
    return found


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ee") / "context"
    result = subprocess.run([str(BUILDER), "create", "-f", str(ROOT / "awx" / "execution-environment.yml"),
                             "-c", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def build_args(context: Path) -> dict[str, str]:
    text = (context / "Dockerfile").read_text()
    return dict(re.findall(r'^ARG (\w+)="([^"]*)"', text, flags=re.MULTILINE))


def test_the_image_runs_ansible_core_on_python_311_at_the_pinned_versions(context: Path) -> None:
    args = build_args(context)
    assert args["PYCMD"] == "/usr/bin/python3.11" and args["PYPKG"] == "python3.11", args
    runtime = pins(ROOT / "requirements.txt")
    assert args["ANSIBLE_INSTALL_REFS"].split() == [f"ansible-core=={runtime['ansible-core']}",
                                                   f"ansible-runner=={runtime['ansible-runner']}"]
    assert "centos:stream9" in args["EE_BASE_IMAGE"], "an RPM base whose dnf has python3.11"


def test_the_image_gets_the_run_time_requirements_and_no_development_tool(context: Path) -> None:
    shipped = pins(context / "_build" / "requirements.txt")
    assert shipped == pins(ROOT / "requirements.txt")
    assert not set(shipped) & DEV_TOOLS, set(shipped) & DEV_TOOLS
    assert not set(pins(ROOT / "requirements-dev.txt")) & set(shipped), "a pin lives in one file"
    collections = (context / "_build" / "requirements.yml").read_text()
    assert "kubernetes.core" in collections and "awx.awx" in collections


def test_every_library_the_content_imports_is_a_run_time_requirement() -> None:
    shipped = set(pins(ROOT / "requirements.txt"))
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for folder in ("library", "module_utils", "filter_plugins", "action_plugins", "callback_plugins"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in stdlib or top in ("ansible", "ansible_collections", "__future__"):
                        continue
                    if DISTRIBUTIONS.get(top) not in shipped:
                        missing.append(f"{path.relative_to(ROOT)} imports {top}")
    assert not missing, missing


def test_the_clients_are_named_as_each_platform_packages_them(context: Path) -> None:
    bindep = [line.strip() for line in (context / "_build" / "bindep.txt").read_text().splitlines() if line.strip()]
    assert "postgresql [platform:rpm]" in bindep and "redis [platform:rpm]" in bindep, bindep
    assert not [line for line in bindep if line.startswith(("postgresql-client", "redis-tools"))
                and "platform:rpm" in line], "EL has no postgresql-client or redis-tools package"
