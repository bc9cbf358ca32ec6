"""filter_plugins/report.py: the outcome of validate.yml (counts, table, JSON report, JUnit XML) from its checks."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
report_filters = load_module("report", "filter_plugins")
summary = report_filters.validate_summary


def report(component: str, host: str, *checks: tuple[str, str, str]) -> dict[str, Any]:
    items = [{"name": name, "status": status, "msg": msg} for name, status, msg in checks]
    problems = [f"{host}: {item['msg']}" for item in items if item["status"] == "fail"]
    return {"component": component, "host": host, "target": f"{component} on {host}", "healthy": not problems,
            "checks": items, "problems": problems}


def parse(text: str) -> ET.Element:
    return ET.fromstring(text.encode())  # noqa: S314 - the filter's own output, not untrusted input


REPORTS = [
    report("redis", "redis-primary", ("redis_reachable", "ok", "reachable"), ("redis_memory", "warn", "memory 85%")),
    report("agents", "local-primary", ("heartbeats", "fail", "agent-3 silent for 90 s"),
           ("coordinator", "skipped", "no coordinator URL")),
]


def test_counts_and_problems_come_from_every_report() -> None:
    result = summary(REPORTS, "critical", "2026-12-06T12:00:00Z", "prod")
    assert result["counts"] == {"ok": 1, "warn": 1, "fail": 1, "skipped": 1}
    assert result["failed"] is True
    assert result["problems"] == ["local-primary: agent-3 silent for 90 s"]
    assert result["report"] == {
        "generated": "2026-12-06T12:00:00Z", "environment": "prod", "fail_on": "critical", "healthy": False,
        "summary": result["counts"], "problems": result["problems"], "reports": REPORTS,
    }


def test_a_warning_fails_the_run_only_with_fail_on_warning() -> None:
    healthy_but_warned = [REPORTS[0]]
    assert summary(healthy_but_warned, "critical")["failed"] is False
    assert summary(healthy_but_warned, "warning")["failed"] is True
    assert summary(healthy_but_warned, "warning")["table"][-1].endswith("UNHEALTHY (validate_fail_on=warning)")


def test_the_table_has_one_line_per_check_between_a_header_and_the_verdict() -> None:
    table = summary(REPORTS)["table"]
    assert table[0].split() == ["STATUS", "COMPONENT", "HOST", "CHECK", "DETAIL"]
    assert table[3].split()[:4] == ["FAIL", "agents", "local-primary", "heartbeats"]
    assert table[-1] == "ok 1, warn 1, fail 1, skipped 1: UNHEALTHY (validate_fail_on=critical)"
    assert len(table) == 2 + 4


def test_the_junit_file_marks_failures_skips_and_passes() -> None:
    root = parse(summary(REPORTS, "warning")["junit"])
    assert root.attrib == {"name": "sapphire-validate", "tests": "4", "failures": "2", "errors": "0", "skipped": "1"}
    suites = root.findall("testsuite")
    assert [suite.attrib["name"] for suite in suites] == ["redis@redis-primary", "agents@local-primary"]
    memory = suites[0].findall("testcase")[1]
    assert memory.find("failure").attrib == {"type": "warn", "message": "memory 85%"}
    assert suites[1].findall("testcase")[1].find("skipped").attrib["message"] == "no coordinator URL"
    assert suites[0].findall("testcase")[0].find("system-out").text == "OK: reachable"
    # under fail_on=critical the warning is a pass with its status in the output
    critical = parse(summary(REPORTS, "critical")["junit"])
    assert critical.attrib["failures"] == "1"
    assert critical.find("testsuite").findall("testcase")[1].find("system-out").text == "WARN: memory 85%"


def test_the_junit_file_stays_well_formed_with_markup_and_control_characters_in_a_message() -> None:
    nasty = report("postgres", "pg<1>", ("pg_reachable", "fail", 'refused: "a" & <b> \x00\x1b[31m'))
    text = summary([nasty])["junit"]
    case = parse(text).find("testsuite/testcase")
    assert case.find("failure").attrib["message"] == 'refused: "a" & <b> \ufffd\ufffd[31m'
    assert case.find("failure").text.startswith("postgres on pg<1>: refused")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')


def test_no_checks_is_healthy_with_an_empty_junit_file() -> None:
    result = summary([])
    assert result["failed"] is False
    assert parse(result["junit"]).attrib["tests"] == "0"


def test_an_unknown_status_or_fail_on_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="status 'broken'"):
        summary([report("redis", "r", ("redis_role", "broken", "?"))])
    with pytest.raises(AnsibleFilterError, match="validate_fail_on must be critical or warning"):
        summary(REPORTS, "sometimes")


def positions_result(healthy: bool, *statuses: str, problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"healthy": healthy, "target": "redis@a, postgres@b", "problems": list(problems),
            "mismatches": [{"agent": "momentum", "symbol": "BTCUSDT"}] if problems else [],
            "checks": [{"name": f"positions:{i}", "status": status, "msg": f"agent {i}: {status}"}
                       for i, status in enumerate(statuses)]}


@pytest.mark.parametrize(("result", "status", "detail"), [
    (positions_result(False, "ok", "fail", problems=("momentum BTCUSDT: redis 3, trades 2",)), "mismatch",
     "momentum BTCUSDT: redis 3, trades 2"),
    (positions_result(True, "ok", "skipped"), "ok", "agent 0: ok; agent 1: skipped"),
    (positions_result(True, "skipped"), "not measured", "agent 0: skipped"),
    (positions_result(True), "not measured", ""),
])
def test_a_positions_reconciliation_reads_as_one_report_line(result: dict[str, Any], status: str, detail: str) -> None:
    """restore.yml's report and the DR drill report say the same of the same reconciliation: never ok unless an agent
    was actually reconciled."""
    outcome = report_filters.positions_outcome(result)
    assert outcome == {"status": status, "detail": detail, "mismatches": result["mismatches"]}


def test_both_reports_read_the_reconciliation_through_the_one_filter() -> None:
    for path in ("roles/agents/tasks/positions.yml", "roles/dr/tasks/verify.yml"):
        text = (REPO_ROOT / path).read_text()
        assert "sapphire_positions_outcome" in text and "selectattr('status', 'eq', 'ok')" not in text, path
