"""The inputs half of a host-mode role's fingerprint (module sapphire_fingerprint observes the other half on the host).

`inputs | sapphire_fingerprint_inputs(role_path)` is one SHA-256 over the inputs (the role's variables and what it
derives from the inventory and the platform state; some are secrets, which therefore never leave the controller) and
the toolkit's code the role runs: the role's own directory, library/, module_utils/, filter_plugins/ and
action_plugins/. A change of any of them makes the next deploy run the role's detailed converge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CODE_DIRS = ("library", "module_utils", "filter_plugins", "action_plugins")
NOT_CODE = (".pyc", ".md")  # compiled files and documentation (a role's README) change nothing a converge does


def tree_digest(paths: list[str | Path]) -> str:
    """SHA-256 over the relative name and content of every file under the given paths (compiled files, docs aside)."""
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(root.rglob("*")) if root.is_dir() else [root] if root.exists() else []
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in NOT_CODE:
                digest.update(f"{path.relative_to(root.parent)}\0".encode())
                digest.update(path.read_bytes())
                digest.update(b"\0")
    return digest.hexdigest()


def fingerprint_inputs(inputs: Any, role_path: str) -> str:
    """Filter: one digest of the inputs and of the code of the role at role_path and of the toolkit's plugins."""
    role = Path(role_path).resolve()
    code = [role] + [role.parent.parent / name for name in CODE_DIRS]
    document = json.dumps({"inputs": inputs, "code": tree_digest(code)}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


class FilterModule:
    """sapphire-ops fingerprint filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_fingerprint_inputs": fingerprint_inputs}
