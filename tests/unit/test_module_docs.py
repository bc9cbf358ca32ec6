"""`ansible-doc` shows every module of the toolkit: its DOCUMENTATION (with the doc fragments it extends), EXAMPLES
and RETURN parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(path.stem for path in (ROOT / "library").glob("sapphire_*.py"))


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    shown = {}
    for module in MODULES:  # one at a time: ansible-doc stops at the first module it cannot parse
        result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-j", module],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        shown[module] = json.loads(result.stdout)[module] if result.returncode == 0 else {"error": result.stderr}
    return shown


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_shows_the_module(docs: dict[str, dict], module: str) -> None:
    entry = docs[module]
    assert "error" not in entry, entry.get("error", "")[-600:]
    assert entry["doc"]["short_description"] and entry["doc"]["description"]
    assert entry["examples"] and entry["return"] is not None


@pytest.mark.parametrize("module", ["sapphire_k8s_apply", "sapphire_k8s_list", "sapphire_emergency_stop"])
def test_the_kubernetes_modules_get_their_connection_options_from_the_fragment(docs: dict[str, dict],
                                                                                module: str) -> None:
    """kubeconfig and context are documented once, in doc_fragments/sapphire.py (sapphire.kubernetes)."""
    options = docs[module]["doc"]["options"]
    assert options["kubeconfig"]["type"] == "path" and options["context"]["type"] == "str"
    assert "kubeconfig:" not in (ROOT / "library" / f"{module}.py").read_text().split("EXAMPLES")[0]
