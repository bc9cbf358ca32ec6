"""Controller-side filters that read operator input the same way whatever its source.

A variable can come from YAML (a real boolean), from `-e k=v` (always a string), from JSON extra
vars, or from an AWX survey (a string, or a multiple-choice answer). Argument specs validate such
values but do not convert the variable the tasks read, so every public boolean is read through
`| bool` where it is used, and checked here where a playbook checks its inputs.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

TRUE = {"true", "yes", "on", "y", "1"}
FALSE = {"false", "no", "off", "n", "0"}


def strict_bool(value: Any, name: str = "the value") -> bool:
    """Filter: a boolean from YAML, -e k=v, JSON or a survey; anything else fails naming the variable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise AnsibleFilterError(f"{name} must be a boolean (true/false, yes/no, 1/0), not {value!r}")


class FilterModule:
    """sapphire-ops input filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_bool": strict_bool}
