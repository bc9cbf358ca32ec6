# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one of the toolkit's own modules inside the controller's worker process when it would run on the controller.

A module run normally costs a new Python interpreter, the AnsiballZ payload and the module's imports (the Kubernetes
client alone holds the CPU for about 0.35 s) each time: about half a second of CPU per task on the controller, where
every Kubernetes, state and health module of the toolkit runs. This is ansible.netcommon's direct execution
(`ansible_network_import_modules`): the module file is imported into the worker, its AnsibleModule reads the task's
arguments instead of stdin and records its result instead of printing it, and the result goes through the same
parsing as a module's output. The libraries a module needs are imported once, in the controller's main process
(the strategy loads the action class there before it forks a worker), so every worker starts with them.

Used only when the module would run on this machine, as this user, in this environment and this Python: a local
connection (a host with ansible_connection local, or a task delegated to localhost), ansible_python_interpreter the
controller's own (the inventories set `{{ ansible_playbook_python }}`), no become, no `environment:`, no async.
Anything else runs the module the normal way, as does every task while SAPPHIRE_DIRECT_MODULES=0 (for comparing or
debugging).

Not used by tasks directly: each toolkit module that may run this way has an action plugin of its name that
subclasses its ActionModule (`action_loader.get('sapphire_direct', class_only=True)`).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import ansible.module_utils
from ansible.module_utils import basic
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.plugins.action.normal import ActionModule as NormalModule
from ansible.utils.display import Display
from ansible.vars.clean import remove_internal_keys

display = Display()

# The toolkit's module_utils, importable as ansible.module_utils.<name> as they are inside a module's payload.
MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
SERIALIZATION_PROFILE = "legacy"  # what a module of the library/ directory is given and returns


def enabled() -> bool:
    return os.environ.get("SAPPHIRE_DIRECT_MODULES", "1").strip().lower() not in ("0", "false", "no", "off")


def preload(*names: str) -> None:
    """Import libraries once in the main process, so that every worker forked from it has them (a missing one is
    left for the module to report as it always does)."""
    if not enabled():
        return
    _module_utils_importable()
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _module_utils_importable() -> None:
    if MODULE_UTILS not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(MODULE_UTILS)


def _is_this_python(interpreter: str) -> bool:
    """The controller's own Python (same environment: same directory, same executable)."""
    if not interpreter:
        return False
    mine = os.path.abspath(sys.executable)
    theirs = os.path.abspath(interpreter)
    return os.path.dirname(theirs) == os.path.dirname(mine) and os.path.realpath(theirs) == os.path.realpath(mine)


class ActionModule(NormalModule):
    """The normal action of a module, run inside the worker when that changes nothing but the cost."""

    def _direct_reason_not(self, task_vars: dict[str, Any]) -> str:
        """Why this task must run the module the normal way ('' when it may run here)."""
        if not enabled():
            return "SAPPHIRE_DIRECT_MODULES is off"
        if getattr(self._connection, "transport", None) != "local":
            return "the connection is not local"
        interpreter = self._templar.template(task_vars.get("ansible_python_interpreter", ""))
        if not _is_this_python(str(interpreter or "")):
            return f"the interpreter {interpreter or '(discovered)'} is not the controller's {sys.executable}"
        if self._play_context.become:
            return "the task uses become"
        if self._compute_environment_string().strip():
            return "the task sets an environment"
        if self._task.async_val:
            return "the task is async"
        return ""

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        reason = self._direct_reason_not(task_vars or {})
        if reason:
            display.vvvv(f"sapphire_direct: {self._task.action} runs as a module: {reason}")
            return super().run(tmp, task_vars)
        result = super(NormalModule, self).run(tmp, task_vars)  # ActionBase: the checks every action makes
        result.update(self._run_here(task_vars or {}))
        return result

    def run_module(self, name: str, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """Another of the toolkit's modules for an action that composes several: run here where the task may run
        here, as a module otherwise."""
        reason = self._direct_reason_not(task_vars)
        if reason:
            display.vvvv(f"sapphire_direct: {name} runs as a module: {reason}")
            return self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        return self._run_here(task_vars, name, args)

    def _load(self, name: str) -> Any:
        context = self._shared_loader_obj.module_loader.find_plugin_with_context(
            name, collection_list=self._task.collections
        )
        if not context.resolved:
            raise ModuleNotFoundError(f"module {name} not found")
        _module_utils_importable()
        name = "sapphire_direct_" + context.plugin_resolved_name.replace(".", "_")
        spec = importlib.util.spec_from_file_location(name, context.plugin_resolved_path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def _run_here(self, task_vars: dict[str, Any], name: str | None = None,
                  module_args: dict[str, Any] | None = None) -> dict[str, Any]:
        name = name or self._task.action
        module = self._load(name)
        args = copy.deepcopy(self._task.args if module_args is None else module_args)
        self._update_module_args(name, args, task_vars)  # the _ansible_* options a module is given
        # As a module receives them (ansible.module_utils.testing.patch_module_args does the same for tests): the
        # arguments serialized by the controller's encoder, read by AnsibleModule (and by any module_utils that makes
        # one) from basic._ANSIBLE_ARGS; the result recorded instead of printed. A worker runs one task, and these
        # are put back afterwards all the same.
        encoder = get_module_encoder(SERIALIZATION_PROFILE, Direction.CONTROLLER_TO_MODULE)
        recorded: dict[str, str] = {}
        result_encoder = get_module_encoder(SERIALIZATION_PROFILE, Direction.MODULE_TO_CONTROLLER)

        def record(_module: AnsibleModule, o: dict[str, Any]) -> None:
            recorded["stdout"] = json.dumps(o, cls=result_encoder)

        saved = (basic._ANSIBLE_ARGS, basic._ANSIBLE_PROFILE, AnsibleModule._record_module_result)
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}, cls=encoder).encode()
        basic._ANSIBLE_PROFILE = SERIALIZATION_PROFILE
        AnsibleModule._record_module_result = record  # type: ignore[method-assign]
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        try:
            module.main()  # an exception the module does not handle fails the task with its traceback
        except SystemExit:
            pass  # exit_json / fail_json
        finally:
            printed, complained = sys.stdout.getvalue(), sys.stderr.getvalue()
            sys.stdout, sys.stderr = stdout, stderr
            basic._ANSIBLE_ARGS, basic._ANSIBLE_PROFILE, AnsibleModule._record_module_result = saved
        output = recorded.get("stdout", printed)
        data = self._parse_returned_data({"stdout": output, "stderr": complained, "rc": 0}, SERIALIZATION_PROFILE)
        remove_internal_keys(data)
        return data
