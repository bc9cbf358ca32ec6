# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of sapphire_report: write report files on the controller (documented in library/)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

ARGUMENT_SPEC = {
    "dest_dir": {"type": "path", "required": True},
    "files": {"type": "dict", "required": True},
    "mode": {"type": "raw", "default": "0640"},
    "dir_mode": {"type": "raw", "default": "0750"},
}


def _octal(value: Any, name: str) -> int:
    try:
        return int(str(value), 8)
    except ValueError as exc:
        raise AnsibleActionFail(f"{name} must be an octal mode such as 0640, got {value!r}") from exc


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(path: str, content: str, mode: int) -> None:
    """Atomically: a temporary file in the same directory, then rename over the report."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".sapphire-report-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            output.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class ActionModule(ActionBase):
    """Runs in the controller's worker: no module is sent anywhere, so no interpreter starts."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        mode, dir_mode = _octal(args["mode"], "mode"), _octal(args["dir_mode"], "dir_mode")
        dest_dir = args["dest_dir"]
        for name in args["files"]:
            if not name or os.path.basename(name) != name or name in (".", ".."):
                raise AnsibleActionFail(f"files: {name!r} must be a plain file name inside dest_dir")
        changed = [name for name, content in args["files"].items()
                   if _current(os.path.join(dest_dir, name)) != str(content)]
        unchanged = sorted(set(args["files"]) - set(changed))
        result.update(changed=bool(changed), dest_dir=dest_dir, written=[], unchanged=unchanged)
        if self._task.check_mode:
            result["would_write"] = changed
            return result
        os.makedirs(dest_dir, mode=dir_mode, exist_ok=True)
        for name in changed:
            _write(os.path.join(dest_dir, name), str(args["files"][name]), mode)
        result["written"] = changed
        return result
