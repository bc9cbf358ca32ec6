"""Every public boolean means the same from YAML, `-e k=v`, JSON extra vars and an AWX survey.

`-e agents_scale_to_zero=false` arrives as the string "false", which Jinja treats as true; argument
specs validate the value but do not convert the variable the tasks read. So every public boolean
(the `type: bool` options of the roles' argument specs, and the playbooks' own switches) must be read
through `| bool` wherever a task, a condition or a template reads it, and the input checks accept the
string forms and refuse nonsense naming the variable (filter sapphire_bool).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import load_module
from sapphire_testlib import yaml_strings

REPO_ROOT = Path(__file__).resolve().parents[2]
inputs = load_module("inputs", "filter_plugins")

# The playbooks' own switches (they belong to no role yet, so no argument spec lists them).
PLAYBOOK_BOOLEANS = {"cleanup_dry_run", "cleanup_include_data", "backup_prune", "restore_keep_scratch",
                     "auto_halt_on_loss", "resume_validate", "rollback_validate",
                     "workload_enabled", "deploy_full_check"}
EXPRESSION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}
JINJA = re.compile(r"{{(.*?)}}|{%-?(.*?)-?%}", re.S)
LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
DEFAULT = r"(?:\s*\|\s*default\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\))?"  # two levels of parentheses


def spec_booleans() -> set[str]:
    names = set()
    for path in REPO_ROOT.glob("roles/*/meta/argument_specs.yml"):
        for spec in (yaml.safe_load(path.read_text())["argument_specs"] or {}).values():
            names |= {name for name, option in (spec.get("options") or {}).items() if option.get("type") == "bool"}
    return names


PUBLIC_BOOLEANS = sorted(spec_booleans() | PLAYBOOK_BOOLEANS)


def expressions_in_yaml(node: Any) -> Iterator[str]:
    for key, text in yaml_strings(node):
        if key in EXPRESSION_KEYS:
            yield text
        yield from (a or b for a, b in JINJA.findall(text))


def expressions() -> Iterator[tuple[str, str]]:
    """(file, Jinja expression) for every expression the playbooks, role tasks, vars and templates evaluate."""
    files = [*REPO_ROOT.glob("playbooks/*.yml"), *REPO_ROOT.glob("*.yml"), *REPO_ROOT.glob("roles/*/tasks/*.yml"),
             *REPO_ROOT.glob("roles/*/handlers/*.yml"), *REPO_ROOT.glob("roles/*/vars/*.yml")]
    for path in files:
        for expression in expressions_in_yaml(yaml.safe_load(path.read_text())):
            yield str(path.relative_to(REPO_ROOT)), expression
    for path in REPO_ROOT.glob("roles/*/templates/**/*.j2"):
        text = re.sub(r"{#.*?#}", "", path.read_text(), flags=re.S)
        for a, b in JINJA.findall(text):
            yield str(path.relative_to(REPO_ROOT)), a or b


def unconverted_reads(name: str) -> list[str]:
    read = re.compile(rf"(?<![\w.'\"]){re.escape(name)}\b(?!\s*[:=](?!=))")
    converted = re.compile(rf"{re.escape(name)}\b{DEFAULT}\s*\|\s*(?:bool|sapphire_bool)\b")
    found = []
    for where, expression in expressions():
        code = LITERAL.sub("''", expression)
        for match in read.finditer(code):
            if not converted.match(code, match.start()):
                found.append(f"{where}: {' '.join(expression.split())[:160]}")
    return found


def test_the_list_of_public_booleans_is_what_the_specs_and_playbooks_declare() -> None:
    assert {"agents_scale_to_zero", "postgres_retention_enforce", "cleanup_dry_run", "dr_force",
            "backup_prune"} <= set(PUBLIC_BOOLEANS)


@pytest.mark.parametrize("name", PUBLIC_BOOLEANS)
def test_every_read_of_a_public_boolean_converts_it(name: str) -> None:
    assert unconverted_reads(name) == [], (
        f"{name} is read without | bool: -e {name}=false would mean true there")


def test_the_check_finds_a_raw_read() -> None:
    """The scanner itself: a raw read is caught, converted reads and assignments are not."""
    code = LITERAL.sub("''", "0 if agents_scale_to_zero else 1")
    assert re.search(r"(?<![\w.'\"])agents_scale_to_zero\b", code)
    converted = re.compile(rf"agents_scale_to_zero\b{DEFAULT}\s*\|\s*(?:bool|sapphire_bool)\b")
    assert converted.match("agents_scale_to_zero | default(not (x | bool)) | bool")
    assert not converted.match("agents_scale_to_zero | default(false)")


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("false", False), ("False", False), ("true", True), ("yes", True), ("no", False),
    ("0", False), ("1", True), (0, False), (1, True), (" off ", False), ("on", True)])
def test_sapphire_bool_reads_every_form(value: Any, expected: bool) -> None:
    assert inputs.strict_bool(value, "dr_force") is expected


@pytest.mark.parametrize("value", ["flase", "", "2", 2, None, [], {}])
def test_sapphire_bool_refuses_nonsense_naming_the_variable(value: Any) -> None:
    with pytest.raises(AnsibleFilterError, match="dr_force must be a boolean"):
        inputs.strict_bool(value, "dr_force")
