#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_coordinator_info
short_description: Check the trading coordinator's /health and /metrics endpoints
description:
  - Calls C(GET /health) of the trading coordinator. A non-200 answer or C(status) C(fail) fails,
    C(degraded) warns; the components that are not ok are named.
  - Calls C(GET /metrics) and checks that it parses as the Prometheus text format and carries the
    metric families of O(required_metrics) (a missing family warns, since the dashboards and alert rules
    that use it go blind).
  - An unreachable coordinator is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  url:
    description: Base URL of the coordinator (for example http://trading-coordinator:8000).
    type: str
    required: true
  required_metrics:
    description: Metric names that /metrics must expose.
    type: list
    elements: str
    default: [portfolio_value, trading_signals_total, agent_activity_score, circuit_breaker_state]
extends_documentation_fragment:
  - sapphire.http
  - sapphire.timeout
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Check the coordinator of the local default (the synthetic workload)
  sapphire_coordinator_info:
    url: http://127.0.0.1:18000
"""

RETURN = r"""
healthy:
  description: True when /health answers 200 with a status other than fail and /metrics parses.
  returned: always
  type: bool
target:
  description: The coordinator that was called.
  returned: always
  type: str
checks:
  description: coordinator_health and coordinator_metrics.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
health:
  description: The JSON body of /health (null when it was not JSON).
  returned: always
  type: dict
metrics:
  description: Metric names found in /metrics with their number of samples.
  returned: always
  type: dict
"""

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    http_get,
    json_or_none,
    parse_prometheus_text,
    validate_params,
)
from ansible.module_utils.sapphire_health import fail, new_result, ok, warn
from ansible.module_utils.sapphire_health import finish as finish_result


def bad_components(health: dict[str, Any]) -> list[str]:
    found = []
    for name, detail in sorted((health.get("components") or {}).items()):
        status = detail.get("status") if isinstance(detail, dict) else detail
        if status not in ("ok", "up", True):
            extra = detail.get("error") or detail.get("detail") if isinstance(detail, dict) else None
            found.append(f"{name}={status}" + (f" ({extra})" if extra else ""))
    return found


def check_health(status: int | None, body: str, error: str | None, url: str) -> tuple[dict[str, Any], Any]:
    if error:
        return fail("coordinator_health", f"coordinator unreachable: {error}", None, 200), None
    health = json_or_none(body)
    state = health.get("status") if isinstance(health, dict) else None
    components = bad_components(health) if isinstance(health, dict) else []
    detail = f"; components: {', '.join(components)}" if components else ""
    observed = {"http_status": status, "status": state}
    if status != 200:
        return fail("coordinator_health", f"{url}/health answered HTTP {status} (status {state}){detail}; check the "
                    "coordinator's logs", observed, 200), health
    if state == "fail":
        return fail("coordinator_health", f"coordinator reports status fail{detail}", observed, "ok"), health
    if state == "degraded":
        return warn("coordinator_health", f"coordinator reports status degraded{detail}", observed, "ok"), health
    if state not in ("ok", "healthy"):
        return warn("coordinator_health", f"/health answered 200 without a known status ({state!r})", observed,
                    "ok"), health
    return ok("coordinator_health", "coordinator healthy", observed, "ok"), health


def check_metrics(status: int | None, body: str, error: str | None,
                  required: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    if error:
        return fail("coordinator_metrics", f"/metrics unreachable: {error}", None, required), {}
    if status != 200:
        return fail("coordinator_metrics", f"/metrics answered HTTP {status}", status, required), {}
    try:
        samples = parse_prometheus_text(body)
    except ValueError as exc:
        return fail("coordinator_metrics", f"/metrics is not valid Prometheus text: {exc}", None, required), {}
    counts = {name: len(values) for name, values in samples.items()}
    missing = [name for name in required if name not in counts]
    if missing:
        return warn("coordinator_metrics", f"/metrics lacks {', '.join(missing)}; dashboards and alert rules using "
                    "them are blind", sorted(counts), required), counts
    return ok("coordinator_metrics", f"/metrics parses ({len(counts)} metrics)", len(counts), required), counts


def collect(params: dict[str, Any],
            get: Callable[..., tuple[int | None, str, str | None]] = http_get) -> dict[str, Any]:
    base = params["url"].rstrip("/")
    result = new_result(f"coordinator {base}")
    health_check, health = check_health(*get(f"{base}/health", params, "application/json"), base)
    metrics_check, counts = check_metrics(*get(f"{base}/metrics", params, "text/plain"), params["required_metrics"])
    result["checks"] = [health_check, metrics_check]
    result.update(health=health if isinstance(health, dict) else None, metrics=counts)
    return finish_result(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            HTTP_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            required_metrics={"type": "list", "elements": "str",
                              "default": ["portfolio_value", "trading_signals_total", "agent_activity_score",
                                          "circuit_breaker_state"]},
        ),
        supports_check_mode=True,
    )
    validate_params(module, positive=("connect_timeout",))
    if not module.params["url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"argument 'url' must start with http:// or https://, got {module.params['url']!r}")
    module.exit_json(**collect(module.params))


if __name__ == "__main__":
    main()
