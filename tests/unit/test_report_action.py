"""sapphire_report: validate.yml's reports written on the controller by an action plugin, no module process."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from sapphire_testlib import run_playbook

PLAYBOOK = "tests/unit/playbooks/report.yml"
FILES = {"validate.json": '{"healthy": true}\n', "validate.junit.xml": "<testsuites/>\n"}


def write(directory: Path, files: dict[str, str], check: bool = False) -> tuple[Any, dict[str, Any]]:
    result = run_playbook(PLAYBOOK, "localhost,", extra_vars={"report_dir": str(directory), "report_files": files},
                          check=check)
    task = result.task_results("Write the reports").get("localhost", {})
    return result, task


def test_reports_are_written_into_a_new_directory_with_private_modes(tmp_path: Path) -> None:
    directory = tmp_path / "reports" / "nested"
    result, task = write(directory, FILES)
    assert result.rc == 0, result.explain()
    assert sorted(task["written"]) == sorted(FILES)
    for name, content in FILES.items():
        assert (directory / name).read_text() == content
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o640
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750


def test_the_same_content_is_left_alone_and_new_content_replaces_the_file(tmp_path: Path) -> None:
    write(tmp_path, FILES)
    _, again = write(tmp_path, FILES)
    assert again["changed"] is False and again["written"] == []
    _, updated = write(tmp_path, {**FILES, "validate.json": '{"healthy": false}\n'})
    assert updated["written"] == ["validate.json"]
    assert (tmp_path / "validate.json").read_text() == '{"healthy": false}\n'
    assert not list(tmp_path.glob(".sapphire-report-*")), "no temporary file is left behind"


def test_check_mode_writes_nothing_and_names_what_it_would_write(tmp_path: Path) -> None:
    result, task = write(tmp_path / "reports", FILES, check=True)
    assert result.rc == 0, result.explain()
    assert sorted(task["would_write"]) == sorted(FILES)
    assert not (tmp_path / "reports").exists()


def test_a_file_name_with_a_directory_part_is_refused(tmp_path: Path) -> None:
    result, task = write(tmp_path, {"../escape.json": "{}"})
    assert result.rc != 0
    assert "plain file name" in task.get("msg", "")
    assert not (tmp_path.parent / "escape.json").exists()
