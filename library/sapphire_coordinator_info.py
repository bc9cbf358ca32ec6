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
  - sapphire.health
  - sapphire.http
  - sapphire.timeout
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

from typing import Any

from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    run_health_module,
)
from ansible.module_utils.sapphire_trading import COORDINATOR_SPEC, validate_url
from ansible.module_utils.sapphire_trading import check_health as check_health  # re-exported for callers
from ansible.module_utils.sapphire_trading import check_metrics as check_metrics  # re-exported for callers
from ansible.module_utils.sapphire_trading import coordinator_collect as collect


def main() -> None:
    def run(params: dict[str, Any]) -> dict[str, Any]:
        validate_url(params["url"])
        return collect(params)

    run_health_module(argument_spec(HTTP_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, COORDINATOR_SPEC), run,
                      positive=("connect_timeout",))


if __name__ == "__main__":
    main()
