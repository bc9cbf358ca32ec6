#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_alerts_info
short_description: Report the alerts firing in Prometheus, by severity
description:
  - Reads C(/api/v1/alerts) of a Prometheus server and reports the firing alerts by their
    C(severity) label. Firing C(critical) alerts fail, firing C(warning) alerts warn, other
    severities are listed without judging. Pending alerts are returned but not judged.
  - An unreachable Prometheus fails the C(prometheus_reachable) check, since an alerting pipeline
    that cannot be read is itself an incident. It is never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  url:
    description: Base URL of Prometheus (without C(/api/v1/alerts)).
    type: str
    required: true
  ignore_alerts:
    description: Alert names that are never judged (for example an always-firing Watchdog).
    type: list
    elements: str
    default: [Watchdog]
extends_documentation_fragment:
  - sapphire.health
  - sapphire.http
  - sapphire.timeout
"""

EXAMPLES = r"""
- name: Check that no critical alert is firing
  sapphire_alerts_info:
    url: http://127.0.0.1:19090
  register: alerts
"""

RETURN = r"""
healthy:
  description: True when Prometheus is reachable and no critical alert fires.
  returned: always
  type: bool
target:
  description: The Prometheus that was read.
  returned: always
  type: str
checks:
  description: prometheus_reachable, alerts_critical, alerts_warning.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
firing:
  description: Firing alerts by severity, each with name, labels, summary and activeAt.
  returned: always
  type: dict
  sample: {critical: [{name: RedisDown, labels: {instance: "redis:6379"}, summary: "Redis down"}]}
pending:
  description: Alerts that are pending (their C(for) has not elapsed).
  returned: always
  type: list
  elements: dict
"""

from collections.abc import Callable
from typing import Any

from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    http_get,
    json_or_none,
    run_health_module,
)
from ansible.module_utils.sapphire_health import fail, finish, new_result, ok, warn


def describe(alert: dict[str, Any]) -> dict[str, Any]:
    labels = dict(alert.get("labels") or {})
    annotations = alert.get("annotations") or {}
    return {"name": labels.pop("alertname", "unnamed"), "severity": labels.pop("severity", "none"),
            "labels": labels, "summary": annotations.get("summary") or annotations.get("description") or "",
            "active_at": alert.get("activeAt")}


def render(alerts: list[dict[str, Any]]) -> str:
    parts = []
    for alert in alerts[:8]:
        where = ",".join(f"{key}={value}" for key, value in sorted(alert["labels"].items())
                         if key in ("instance", "job", "namespace", "pod", "agent", "service"))
        parts.append(alert["name"] + (f"{{{where}}}" if where else "") + (f": {alert['summary']}"
                                                                            if alert["summary"] else ""))
    more = f" and {len(alerts) - 8} more" if len(alerts) > 8 else ""
    return "; ".join(parts) + more


def evaluate(alerts: list[dict[str, Any]], ignore: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                                         list[dict[str, Any]]]:
    firing: dict[str, list[dict[str, Any]]] = {}
    pending = []
    for raw in alerts:
        alert = describe(raw)
        if alert["name"] in ignore:
            continue
        if raw.get("state") == "firing":
            firing.setdefault(alert["severity"], []).append(alert)
        else:
            pending.append(alert)
    critical, warning = firing.get("critical", []), firing.get("warning", [])
    checks = []
    if critical:
        checks.append(fail("alerts_critical", f"{len(critical)} critical alert(s) firing: {render(critical)}",
                           [item["name"] for item in critical], 0))
    else:
        checks.append(ok("alerts_critical", "no critical alert firing", [], 0))
    if warning:
        checks.append(warn("alerts_warning", f"{len(warning)} warning alert(s) firing: {render(warning)}",
                           [item["name"] for item in warning], 0))
    else:
        checks.append(ok("alerts_warning", "no warning alert firing", [], 0))
    return checks, firing, pending


def collect(params: dict[str, Any],
            get: Callable[..., tuple[int | None, str, str | None]] = http_get) -> dict[str, Any]:
    base = params["url"].rstrip("/")
    result = new_result(f"prometheus {base}")
    result.update(firing={}, pending=[])
    status, body, error = get(f"{base}/api/v1/alerts", params, "application/json")
    data = json_or_none(body) if status == 200 else None
    if error or status != 200 or not isinstance(data, dict) or data.get("status") != "success":
        reason = error or f"HTTP {status} from {base}/api/v1/alerts: {body[:200]}"
        result["checks"] = [fail("prometheus_reachable", f"cannot read alerts from Prometheus ({reason}); alerting "
                                 "is blind until it is back", False, True)]
        return finish(result)
    alerts = (data.get("data") or {}).get("alerts") or []
    checks, firing, pending = evaluate(alerts, params["ignore_alerts"])
    result["checks"] = [ok("prometheus_reachable", f"{len(alerts)} alert(s) active or pending", True, True), *checks]
    result.update(firing=firing, pending=pending)
    return finish(result)


def main() -> None:
    def run(params: dict[str, Any]) -> dict[str, Any]:
        if not params["url"].startswith(("http://", "https://")):
            raise ValueError(f"argument 'url' must start with http:// or https://, got {params['url']!r}")
        return collect(params)

    run_health_module(argument_spec(HTTP_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
                                    ignore_alerts={"type": "list", "elements": "str", "default": ["Watchdog"]}),
                      run, positive=("connect_timeout",))


if __name__ == "__main__":
    main()
