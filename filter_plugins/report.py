"""Controller-side filters that turn the checks of validate.yml into its summary, table, JSON report and JUnit XML, and
a positions reconciliation into a report line.

Each role's validate entry point records a list of reports on the host it checked (`<role>_validate_reports`):
`{component, host, target, healthy, checks: [{name, status, msg}], problems: [...]}`. validate.yml collects them and
calls `sapphire_validate_summary` once, so the counts, the table and the JUnit file are computed in one place (a
Jinja variable would be evaluated again at every use) and the XML is built with xml.etree, escaped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from ansible.errors import AnsibleFilterError

STATUSES = ("ok", "warn", "fail", "skipped")
FAIL_ON = ("critical", "warning")
ROW = "%-7s %-16s %-18s %-34s %s"
# Characters XML 1.0 cannot carry at all, even escaped (a Redis value or an exception text may hold them).
_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: Any) -> str:
    return _INVALID_XML.sub("\ufffd", str(value))


def _failing(status: str, fail_on: str) -> bool:
    return status == "fail" or (status == "warn" and fail_on == "warning")


def _junit(reports: list[dict[str, Any]], counts: dict[str, int], fail_on: str) -> str:
    checks = sum(len(report["checks"]) for report in reports)
    failures = sum(1 for report in reports for item in report["checks"] if _failing(item["status"], fail_on))
    root = ET.Element(
        "testsuites",
        {"name": "sapphire-validate", "tests": str(checks), "failures": str(failures),
         "errors": "0", "skipped": str(counts["skipped"])},
    )
    for report in reports:
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": _xml_text(f"{report['component']}@{report['host']}"),
                "tests": str(len(report["checks"])),
                "failures": str(sum(1 for item in report["checks"] if _failing(item["status"], fail_on))),
                "errors": "0",
                "skipped": str(sum(1 for item in report["checks"] if item["status"] == "skipped")),
            },
        )
        for item in report["checks"]:
            case = ET.SubElement(
                suite,
                "testcase",
                {
                    "classname": _xml_text(f"sapphire.{report['component']}.{report['host']}"),
                    "name": _xml_text(item["name"]),
                },
            )
            message = _xml_text(item["msg"])
            if _failing(item["status"], fail_on):
                failure = ET.SubElement(case, "failure", {"type": item["status"], "message": message})
                failure.text = f"{_xml_text(report['target'])}: {message}"
            elif item["status"] == "skipped":
                ET.SubElement(case, "skipped", {"message": message})
            else:
                ET.SubElement(case, "system-out").text = f"{item['status'].upper()}: {message}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def validate_summary(
    reports: list[dict[str, Any]], fail_on: str = "critical", generated: str = "", environment: str = "unknown"
) -> dict[str, Any]:
    """Filter: the outcome of validate.yml from the collected reports.

    Returns `{failed, counts, problems, table, report, junit}`: `report` is the JSON report (generated, environment,
    fail_on, healthy, summary, problems, reports); `table` the lines shown to the operator; `junit` the XML text.
    A check with an unknown status fails the filter: a role that reports something else is a defect.
    """
    if fail_on not in FAIL_ON:
        raise AnsibleFilterError(f"validate_fail_on must be critical or warning, got {fail_on!r}")
    counts = dict.fromkeys(STATUSES, 0)
    for report in reports:
        for item in report["checks"]:
            if item["status"] not in counts:
                raise AnsibleFilterError(
                    f"check {item.get('name')!r} of {report.get('component')}@{report.get('host')} has status "
                    f"{item['status']!r}, not one of {', '.join(STATUSES)}"
                )
            counts[item["status"]] += 1
    failed = counts["fail"] > 0 or (fail_on == "warning" and counts["warn"] > 0)
    problems = [problem for report in reports for problem in report.get("problems", [])]
    table = [ROW % ("STATUS", "COMPONENT", "HOST", "CHECK", "DETAIL")]
    table += [
        ROW % (item["status"].upper(), report["component"], report["host"], item["name"], item["msg"])
        for report in reports
        for item in report["checks"]
    ]
    table.append(
        f"ok {counts['ok']}, warn {counts['warn']}, fail {counts['fail']}, skipped {counts['skipped']}: "
        f"{'UNHEALTHY' if failed else 'HEALTHY'} (validate_fail_on={fail_on})"
    )
    report = {
        "generated": generated,
        "environment": environment,
        "fail_on": fail_on,
        "healthy": not failed,
        "summary": counts,
        "problems": problems,
        "reports": reports,
    }
    return {
        "failed": failed,
        "counts": counts,
        "problems": problems,
        "table": table,
        "report": report,
        "junit": _junit(reports, counts, fail_on),
    }


def positions_outcome(result: dict[str, Any]) -> dict[str, Any]:
    """Filter: sapphire_positions_info's result as a report line: {status, detail, mismatches}. `mismatch` when a
    position disagrees with the trades, `ok` when at least one agent was reconciled, `not measured` otherwise (no
    positions kept yet, or every store skipped). restore.yml (agents/positions) and the DR drill report read it."""
    if not isinstance(result, dict):
        raise AnsibleFilterError(f"sapphire_positions_outcome expects sapphire_positions_info's result, got {result!r}")
    checks = result.get("checks") or []
    problems = result.get("problems") or []
    if not result.get("healthy", False):
        status = "mismatch"
    elif any(check.get("status") == "ok" for check in checks):
        status = "ok"
    else:
        status = "not measured"
    detail = "; ".join(problems) if problems else "; ".join(str(check.get("msg", "")) for check in checks)
    return {"status": status, "detail": detail, "mismatches": result.get("mismatches") or []}


class FilterModule:
    """sapphire-ops report filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_validate_summary": validate_summary, "sapphire_positions_outcome": positions_outcome}
