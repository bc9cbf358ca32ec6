"""The AWX surveys ask for what the playbooks read, and disruptive runs ask for `confirm`.

Read statically, without AWX and without running a playbook: awx/configure.yml (which playbook each
job template runs, its survey and extra vars) and the playbooks (following import_playbook, roles
and include/import_tasks: the files a run can reach). What an operator relies on:
- every playbook that imports the confirmation check (roles/confirm) asks for `confirm` in its AWX
  survey, with a question that says to type the environment name, and those playbooks are exactly
  the disruptive ones (dr-failover, dr-failback, restore, cleanup);
- every survey question and every extra var of a job template is a variable its playbook (or a
  role or task file it reaches) actually reads: a survey answer nothing reads is a check nobody runs;
- the check comes before the first task that can write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import nodes
from jinja2.nativetypes import NativeEnvironment
from sapphire_testlib import yaml_strings

# Ansible's regexes in the playbooks ('\\.') make Jinja's lexer warn while parsing them; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
CONFIRM_ROLE = "confirm"
DISRUPTIVE = {"dr-failover.yml", "dr-failback.yml", "restore.yml", "cleanup.yml"}
CONDITIONAL_KEYS = {"when", "that", "failed_when", "changed_when", "until"}
ROLE_KEYS = {"include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role"}
TASKS_KEYS = {"include_tasks", "import_tasks", "ansible.builtin.include_tasks", "ansible.builtin.import_tasks"}
PLAYBOOK_KEYS = {"import_playbook", "ansible.builtin.import_playbook"}
STATE_ROLE = "sapphire_state"
# Modules that write nothing: the only ones allowed before the confirmation check.
READ_ONLY = {"ansible.builtin.assert", "ansible.builtin.set_fact", "ansible.builtin.debug", "ansible.builtin.fail",
             "ansible.builtin.validate_argument_spec", "ansible.builtin.include_vars", "assert", "set_fact", "debug",
             "fail"}
TASK_KEYWORDS = {"name", "when", "vars", "tags", "run_once", "register", "loop", "loop_control", "delegate_to",
                 "no_log", "changed_when", "failed_when", "check_mode", "ignore_errors", "until", "retries", "delay",
                 "become", "environment", "notify", "listen", "any_errors_fatal", "ignore_unreachable", "args",
                 "throttle", "timeout", "module_defaults", "collections", "diff", "apply", "debugger"}


@dataclass
class Reach:
    """What a playbook run can reach: files, tasks in order, and the confirmation check."""

    files: list[Path] = field(default_factory=list)
    tasks: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # playbook-level tasks, in order

    def add(self, path: Path) -> bool:
        if path in self.files:
            return False
        self.files.append(path)
        return True


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def module_of(task: dict[str, Any]) -> str:
    keys = [key for key in task if key not in TASK_KEYWORDS and key not in {"block", "rescue", "always"}]
    return keys[0] if keys else ""


def role_calls(task: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, tasks_from) of an include_role/import_role task; a role name taken from a literal loop
    (`name: "{{ deploy_item }}"` over [redis, postgres]) gives one call per item."""
    for key in ROLE_KEYS & task.keys():
        args = task[key]
        tasks_from = args.get("tasks_from", "main")
        if "{{" not in args["name"]:
            return [(args["name"], tasks_from)]
        loop_var = task.get("loop_control", {}).get("loop_var", "item")
        assert isinstance(task.get("loop"), list), f"role {args['name']} of task {task.get('name')!r} is not static"
        return [(jinja2.Template(args["name"]).render({loop_var: item}), tasks_from) for item in task["loop"]]
    return []


def walk_tasks(tasks: list[dict[str, Any]] | None) -> Iterator[dict[str, Any]]:
    for task in tasks or []:
        if "block" in task:
            for part in ("block", "rescue", "always"):
                yield from walk_tasks(task.get(part))
        else:
            yield task


def reach_role(name: str, tasks_from: str, reach: Reach) -> None:
    role = REPO / "roles" / name
    assert role.is_dir(), f"role {name} not found under roles/"
    for extra in ("defaults/main.yml", "vars/main.yml", "handlers/main.yml"):
        if (role / extra).exists():
            reach.add(role / extra)
    for template in sorted((role / "templates").rglob("*")) if (role / "templates").exists() else []:
        if template.is_file():
            reach.add(template)
    reach_tasks_file(role / "tasks" / f"{Path(tasks_from).stem}.yml", reach, playbook_level=False)


def reach_tasks_file(path: Path, reach: Reach, playbook_level: bool) -> None:
    assert path.exists(), f"{path} (included) does not exist"
    if reach.add(path):
        reach_task_list(load(path) or [], path, reach, playbook_level)


def reach_task_list(tasks: list[dict[str, Any]], where: Path, reach: Reach, playbook_level: bool) -> None:
    for task in walk_tasks(tasks):
        if playbook_level:
            reach.tasks.append((where, task))
        for called in role_calls(task):
            reach_role(*called, reach)
        for key in TASKS_KEYS & task.keys():
            target = task[key] if isinstance(task[key], str) else task[key].get("file")
            if "{{" not in target:
                reach_tasks_file(where.parent / target, reach, playbook_level)


def reach_playbook(path: Path, reach: Reach | None = None) -> Reach:
    reach = reach or Reach()
    if not reach.add(path):
        return reach
    for play in load(path):
        imported = next((play[key] for key in PLAYBOOK_KEYS & play.keys()), None)
        if imported:
            reach_playbook(path.parent / imported, reach)
            continue
        for role in play.get("roles", []):
            name = role if isinstance(role, str) else role.get("role") or role["name"]
            reach.tasks.append((path, {"ansible.builtin.import_role": {"name": name}}))
            reach_role(name, "main", reach)
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            reach_task_list(play.get(section) or [], path, reach, playbook_level=True)
    return reach


def names_in_template(source: str) -> set[str]:
    """Top-level variable names a Jinja template reads (loaded names minus those it assigns)."""
    tree = jinja2.Environment(autoescape=True, extensions=["jinja2.ext.do"]).parse(source)
    loaded = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}
    stored = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    return loaded - stored


def variables_read(reach: Reach) -> set[str]:
    read: set[str] = set()
    for path in reach.files:
        if path.suffix not in (".yml", ".yaml"):
            try:
                read |= names_in_template(path.read_text())
            except jinja2.TemplateSyntaxError:
                pass  # not a Jinja template (a file the role copies as it is, e.g. Prometheus' {{ $value }})
            continue
        for key, text in yaml_strings(load(path)):
            if key in CONDITIONAL_KEYS:
                read |= names_in_template("{{ " + text + " }}")
            elif "{{" in text or "{%" in text:
                read |= names_in_template(text)
    return read


@dataclass
class JobTemplate:
    name: str
    playbook: str
    survey: dict[str, Any] | None
    extra_vars: dict[str, Any]


def job_templates(environment: str = "prod") -> list[JobTemplate]:
    """Each job template of awx/configure.yml, rendered the way its task renders it."""
    play = load(REPO / "awx" / "configure.yml")[0]
    task = next(task for task in play["tasks"] if "awx.awx.job_template" in task)
    args = task["awx.awx.job_template"]
    loop_var = task.get("loop_control", {}).get("loop_var", "item")
    native = NativeEnvironment()
    found = []
    for item in play["vars"]["awx_playbooks"]:
        context = {**play["vars"], loop_var: item, "awx_environment": environment}

        def render(expr: str, context: dict[str, Any] = context) -> Any:
            return native.from_string(expr).render(**context, omit=None)

        survey = render(args["survey_spec"])
        if survey is not None:
            survey = {**survey, "spec": [{key: render(value) if isinstance(value, str) else value
                                          for key, value in question.items()} for question in survey["spec"]]}
        found.append(JobTemplate(name=item["name"], playbook=str(render(args["playbook"])), survey=survey,
                                 extra_vars=render(args["extra_vars"]) or {}))
    return found


def role_is_read_only(name: str, tasks_from: str) -> bool:
    """Whether every task an entry point of a role runs (its tasks file and what it includes) writes nothing."""
    reach = Reach()
    reach_tasks_file(REPO / "roles" / name / "tasks" / f"{Path(tasks_from).stem}.yml", reach, playbook_level=True)
    return all(module_of(task) in READ_ONLY or TASKS_KEYS & task.keys() for _, task in reach.tasks)


def confirm_calls(reach: Reach) -> list[dict[str, Any]]:
    return [task for _, task in reach.tasks if any(name == CONFIRM_ROLE for name, _ in role_calls(task))]


TEMPLATES = job_templates()


def test_the_job_templates_run_playbooks_of_the_repository() -> None:
    assert {template.playbook for template in TEMPLATES} >= DISRUPTIVE
    for template in TEMPLATES:
        assert (REPO / template.playbook).exists(), f"job template {template.name} runs a missing {template.playbook}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda template: template.name)
def test_every_survey_question_and_extra_var_is_read_by_the_playbook(template: JobTemplate) -> None:
    reach = reach_playbook(REPO / template.playbook)
    read = variables_read(reach)
    asked = [question["variable"] for question in (template.survey or {}).get("spec", [])]
    unread = [name for name in asked + list(template.extra_vars) if name not in read]
    assert not unread, (f"the AWX job template {template.name} asks for {unread}, which {template.playbook} "
                        f"and the roles and task files it reaches never read")


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda template: template.name)
def test_a_playbook_with_the_confirmation_check_asks_for_confirm(template: JobTemplate) -> None:
    calls = confirm_calls(reach_playbook(REPO / template.playbook))
    if template.playbook in DISRUPTIVE:
        assert calls, f"{template.playbook} is disruptive but never calls the {CONFIRM_ROLE} role"
    if not calls:
        return
    questions = {question["variable"]: question for question in (template.survey or {}).get("spec", [])}
    assert "confirm" in questions, f"{template.playbook} checks confirm; the survey of {template.name} does not ask"
    question = questions["confirm"]
    assert question["type"] == "text"
    assert "environment name" in question["question_name"] and "prod" in question["question_name"], question
    # A playbook that always needs confirm makes the question required; a conditional one
    # (a live restore, cleanup that deletes) leaves it optional but still offers it.
    if any("when" not in call for call in calls):
        assert question["required"] is True, question
    confirmations = [name for name in questions if "confirm" in name]
    assert confirmations == ["confirm"], f"one confirmation variable, not {confirmations}"


def test_only_the_disruptive_playbooks_call_the_confirmation_check() -> None:
    with_check = {path.name for path in sorted(REPO.glob("playbooks/*.yml"))
                  if confirm_calls(reach_playbook(path))}
    assert with_check == DISRUPTIVE


@pytest.mark.parametrize("playbook", sorted(DISRUPTIVE))
def test_the_confirmation_comes_before_anything_that_can_write(playbook: str) -> None:
    reach = reach_playbook(REPO / "playbooks" / playbook)
    for where, task in reach.tasks:
        if any(name == CONFIRM_ROLE for name, _ in role_calls(task)):
            return
        # The boilerplate's read of the platform state and the operations lock come first in every playbook:
        # they are the run's bookkeeping (a Lease, a cache of the state), not the platform's data.
        if any(name == STATE_ROLE for name, _ in role_calls(task)) or STATE_ROLE in where.parts:
            continue
        # An imported tasks file is structure: its tasks follow in reach.tasks and are checked one by one.
        # A role entry point that only reads (e.g. the DR plan) may come first.
        calls = role_calls(task)
        if TASKS_KEYS & task.keys() or (calls and all(role_is_read_only(*call) for call in calls)):
            continue
        assert module_of(task) in READ_ONLY, (
            f"{where.relative_to(REPO)}: task {task.get('name')!r} ({module_of(task)}) runs before the "
            f"{CONFIRM_ROLE} role in {playbook}")
    pytest.fail(f"{playbook} never reaches the {CONFIRM_ROLE} role")


def test_the_confirmation_role_reads_confirm_and_the_environment_name() -> None:
    reach = Reach()
    reach_role(CONFIRM_ROLE, "main", reach)
    assert {"confirm", "sapphire_environment", "ansible_check_mode"} <= variables_read(reach)


def schedules() -> list[dict[str, Any]]:
    play = load(REPO / "awx" / "configure.yml")[0]
    (task,) = [task for task in play["tasks"] if "awx.awx.schedule" in task]
    return task["loop"]


@pytest.mark.parametrize("schedule", schedules(), ids=lambda schedule: schedule["name"])
def test_every_schedule_runs_a_template_whose_playbook_reads_its_extra_data(schedule: dict[str, Any]) -> None:
    playbook = schedule["template"].split(" (")[0].removeprefix("sapphire ") + ".yml"
    read = variables_read(reach_playbook(REPO / playbook))
    unread = [name for name in schedule.get("extra_data", {}) if name not in read]
    assert not unread, f"schedule {schedule['name']} sets {unread}, which {playbook} never reads"


def test_backups_are_scheduled_as_a_nightly_full_and_hourly_differentials() -> None:
    backups = {item["name"]: item for item in schedules() if item["template"].startswith("sapphire backup")}
    kinds = sorted(item.get("extra_data", {}).get("backup_postgres_type", "full") for item in backups.values())
    assert kinds == ["diff", "full"], backups
    hourly = next(item for item in backups.values() if "FREQ=HOURLY" in item["rrule"])
    assert "BYHOUR" in hourly["rrule"] and ",2," not in hourly["rrule"], "the hourly run skips the full's hour"
