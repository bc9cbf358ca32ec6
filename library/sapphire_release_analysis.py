#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_release_analysis
short_description: Analyse a release against Prometheus, as an Argo Rollouts AnalysisRun does
description:
  - Measures each of O(metrics) (an instant PromQL query whose C($release), C($stable) and C($tier) are replaced by
    O(args)) O(count) times, O(interval) seconds apart, after O(initial_delay).
  - A measurement is failed when it meets the metric's C(failure_condition), else successful when it meets its
    C(success_condition), else inconclusive (both given), failed (only a success condition) or successful (only a
    failure condition). A query that fails or returns no sample or NaN is an error.
  - A metric is Failed with more failed measurements than its C(failure_limit) (default 0), Error with more
    consecutive errors than its C(consecutive_error_limit) (default 4), Inconclusive with more inconclusive ones than
    its C(inconclusive_limit) (default 0), else Successful once its count is reached. The run is Failed or Error as
    soon as one metric is (the others are Terminated), Inconclusive when one metric is, else Successful.
  - Reads only and never fails on a failed analysis; the caller acts on RV(phase). A bad metric fails the module
    naming the field.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.http
  - sapphire.timeout
options:
  url:
    description: Base URL of the Prometheus whose C(/api/v1/query) is asked.
    type: str
    required: true
  metrics:
    description:
      - The metrics, each C({name, query, success_condition, failure_condition, failure_limit, inconclusive_limit,
        consecutive_error_limit}). A condition is an operator (C(<), C(<=), C(>), C(>=), C(==), C(!=)) and a number
        the measured value is compared with, such as C(<= 0.01) (Argo's C(result[0] <= 0.01)).
    type: list
    elements: dict
    required: true
  args:
    description: The values of C($release), C($stable), C($tier) (or any other C($name)) in the queries.
    type: dict
    default: {}
  interval:
    description: Seconds between two measurements of a metric.
    type: float
    default: 60
  count:
    description: Measurements of each metric before it is Successful.
    type: int
    default: 5
  initial_delay:
    description: Seconds to wait before the first measurement.
    type: float
    default: 0
"""

EXAMPLES = r"""
- name: Analyse the canary of the lightweight tier
  sapphire_release_analysis:
    url: http://127.0.0.1:19090
    args: {release: 2026.12.1, stable: 2026.11.0, tier: lightweight}
    interval: 60
    count: 5
    metrics:
      - name: error-rate
        query: >-
          sum(rate(sapphire_agent_errors_total{release="$release",tier="$tier"}[2m]))
          / sum(rate(sapphire_agent_decisions_total{release="$release",tier="$tier"}[2m]))
        success_condition: "<= 0.01"
        failure_condition: "> 0.05"
  register: analysis
"""

RETURN = r"""
phase:
  description: Successful, Failed, Error or Inconclusive.
  returned: always
  type: str
msg:
  description: The phase and, unless successful, each metric that decided it with its conditions and measured values.
  returned: always
  type: str
metrics:
  description: Per metric its name, query (arguments replaced), conditions, phase and measurements (at, value, phase,
    message).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.sapphire_analysis import ANALYSIS_SPEC, analysis_collect
from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    http_get,
    run_health_module,
)


def main() -> None:
    run_health_module(argument_spec(HTTP_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC, ANALYSIS_SPEC),
                      lambda params: analysis_collect(params, http_get), positive=("connect_timeout",))


if __name__ == "__main__":
    main()
