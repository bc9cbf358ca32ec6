"""Each role default lives in one place: the role's defaults/main.yml. Inside the role (its tasks, vars, handlers and
templates, all run with the role's defaults loaded) a `| default(...)` on one of its own defaults is a second copy
that can drift from the first; the checks below fail on one.

Allowed: another host's value (`hostvars[h].x | default(...)`: hostvars carry no role defaults) and
`default(..., true)` (a different rule: it also replaces an empty value)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent for path in REPO_ROOT.glob("roles/*/defaults/main.yml"))
# A variable followed by `| default(`, not reached through an attribute (hostvars[h].x) and not an item key.
DEFAULTED = re.compile(r"(?<![.\w'\"\]])([a-z][a-z0-9_]*)\s*\|\s*default\(([^()]*(?:\([^()]*\))?[^()]*)\)")


def own_defaults_defaulted_again(role: Path) -> list[str]:
    names = set(yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {})
    found = []
    for path in sorted(role.rglob("*")):
        if path.suffix not in (".yml", ".j2") or path.parent.name in ("defaults", "meta") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in DEFAULTED.finditer(line):
                name, arguments = match.groups()
                if name in names and not re.search(r",\s*(true|True)\s*$", arguments):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {name} | default({arguments})")
    return found


def test_the_pattern_finds_a_second_default_and_allows_the_other_forms() -> None:
    assert DEFAULTED.findall("{{ redis_port | default(6379) }}") == [("redis_port", "6379")]
    assert DEFAULTED.findall("{{ hostvars[h].redis_port | default(6379) }}") == []
    line = "{{ redis_ca | default(omit, true) }}"
    assert [m.group(2) for m in DEFAULTED.finditer(line)] == ["omit, true"]


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_a_role_does_not_default_its_own_defaults_again(role: Path) -> None:
    assert own_defaults_defaulted_again(role) == []
