"""A fact or variable that is a whole host's hostvars carries every secret of the inventory (the vault's values are
inventory variables): `-vvv` prints a set_fact's result, and the copy travels wherever the fact goes. Tasks take the
fields they need instead (the workload role copied the primaries' hostvars, and deploy -vvv printed the vault)."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A value that is hostvars[<host>] by itself, or one branch of a conditional: "{{ hostvars[x] }}", "hostvars[x] if ...",
# "... else hostvars[x] }}".
WHOLE_HOSTVARS = re.compile(r"(\{\{|\belse)\s*hostvars\[[^\]]+\]\s*(\}\}|\bif\b)")


def copies() -> list[str]:
    found = []
    for path in sorted([*REPO_ROOT.glob("roles/*/tasks/*.yml"), *REPO_ROOT.glob("roles/*/vars/*.yml"),
                        *REPO_ROOT.glob("playbooks/**/*.yml"), *REPO_ROOT.glob("*.yml")]):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if WHOLE_HOSTVARS.search(line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    return found


def test_no_task_copies_a_whole_hosts_hostvars() -> None:
    assert copies() == []


def test_the_scan_finds_such_a_copy() -> None:
    assert WHOLE_HOSTVARS.search('x: "{{ hostvars[y.host] if y else {} }}"')
    assert WHOLE_HOSTVARS.search('x: "{{ hostvars[inventory_hostname] }}"')
    assert not WHOLE_HOSTVARS.search("x: \"{{ hostvars[y.host].redis_port | default('') }}\"")
