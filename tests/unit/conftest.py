"""Make the repository's module_utils importable as ansible.module_utils.* and load library modules."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import ansible.module_utils
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(REPO_ROOT / "module_utils"))
if str(REPO_ROOT / "workload") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "workload"))


def load_module(name: str, directory: str = "library") -> ModuleType:
    """A library/<name>.py module (or a file of another plugin directory), imported by path (it is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / directory / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_module(name: str, args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run a module's main() with args the way Ansible passes them; the JSON it prints."""
    from ansible.module_utils.testing import patch_module_args

    module = load_module(name)
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def module_runner(capsys: pytest.CaptureFixture[str]):
    return lambda name, args: run_module(name, args, capsys)
