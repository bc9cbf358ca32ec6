# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of sapphire_k8s_apply (documented in library/): read the objects, apply only the drifted ones.

The read is sapphire_k8s_list (inside the worker where sapphire_direct allows it), the comparison the tested filters
`sapphire_with_applied_hash` and `sapphire_unconverged`, the write kubernetes.core.k8s as a module, only when
something drifted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import action_loader

DirectModule = action_loader.get("sapphire_direct", class_only=True)
sapphire_direct = sys.modules[DirectModule.__module__]
sapphire_direct.preload("kubernetes.client", "kubernetes.config")

ARGUMENT_SPEC = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "definition": {"type": "list", "elements": "dict", "required": True},
    "field_manager": {"type": "str", "default": "sapphire-ops"},
}


def _filters() -> Any:
    path = Path(__file__).resolve().parents[1] / "filter_plugins" / "sapphire.py"
    spec = importlib.util.spec_from_file_location("sapphire_k8s_apply_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTERS = _filters()


def reference(obj: Any, index: int) -> dict[str, str]:
    """What sapphire_k8s_list reads for one object: its kind, name and namespace ('' for a cluster-scoped one)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or not obj.get("apiVersion") or not obj.get("kind") or not meta.get("name"):
        raise AnsibleActionFail(f"definition[{index}] has no apiVersion, kind or metadata.name")
    return {"api_version": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "namespace": meta.get("namespace") or ""}


def label(ref: dict[str, str]) -> str:
    return f"{ref['kind']}/{ref['namespace']}/{ref['name']}" if ref["namespace"] else f"{ref['kind']}/{ref['name']}"


def desired(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as applied: each but a Secret with the digest of its definition (a Secret's digest would be one of
    its values)."""
    hashed = iter(FILTERS.with_applied_hash([obj for obj in objects if obj.get("kind") != "Secret"]))
    return [obj if obj.get("kind") == "Secret" else next(hashed) for obj in objects]


class ActionModule(DirectModule):
    """Runs in the controller's worker; only the apply of drifted objects starts a module."""

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = ActionBase.run(self, tmp, task_vars)  # the checks every action makes; no module of the task's name
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        objects = desired(args["definition"])
        refs = [reference(obj, index) for index, obj in enumerate(args["definition"])]
        connection = {key: args[key] for key in ("kubeconfig", "context") if args[key] is not None}
        read = self.run_module("sapphire_k8s_list", {**connection, "kinds": refs}, task_vars)
        if read.get("failed"):
            result.update(failed=True, msg=read.get("msg", "cannot read the objects"), drifted=[])
            return result
        drifted = FILTERS.unconverged(objects, read.get("resources") or [])
        wanted = {id(obj) for obj in drifted}
        result.update(changed=False, drifted=[label(ref) for obj, ref in zip(objects, refs, strict=True)
                                              if id(obj) in wanted])
        if not drifted:
            return result
        applied = self._execute_module(module_name="kubernetes.core.k8s", task_vars=task_vars, module_args={
            **connection, "state": "present", "apply": True, "definition": drifted,
            "server_side_apply": {"field_manager": args["field_manager"], "force_conflicts": True}})
        result.update(applied)
        return result
