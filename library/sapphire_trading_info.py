#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_trading_info
short_description: Check that the platform is trading - heartbeats, breakers, coordinator, market data, risk, positions
description:
  - Runs the checks of M(sapphire_heartbeat_info), M(sapphire_circuit_breaker_info),
    M(sapphire_coordinator_info), M(sapphire_market_data_info), M(sapphire_risk_info) and
    M(sapphire_positions_info) side by side in one process (they wait on Redis, PostgreSQL and HTTP, not on the
    CPU) and returns the six
    reports, each the result the single module returns for the same options.
  - A check whose endpoint is not given is reported as skipped, with a single check named after the
    component that says which variable to set - heartbeats and circuit_breakers without O(redis_host),
    market_data and risk without O(postgres_host), positions without either, coordinator without O(coordinator_url).
  - With O(trading=false) (a warm standby region, agents scaled to zero) only heartbeats and circuit
    breakers run; coordinator, market_data, risk and positions are reported as skipped.
  - An unreachable server is a failing check of the component that needs it, never a module failure;
    the other components still report.
version_added: "1.0.0"
author: sapphire-ops
options:
  checks:
    description: The components to check; the others are reported as skipped.
    type: list
    elements: str
    choices: [heartbeats, circuit_breakers, coordinator, market_data, risk, positions]
    default: [heartbeats, circuit_breakers, coordinator, market_data, risk, positions]
  trading:
    description:
      - The region is expected to trade. V(false) (a warm standby region) skips coordinator, market_data,
        risk and positions, reporting that the region is not trading.
    type: bool
    default: true
  redis_host:
    description:
      - Host name or address of the region's primary Redis. Unset or empty skips heartbeats and
        circuit_breakers, and risk does not check the daily loss.
    type: str
    default: null
  postgres_host:
    description:
      - Host name, address or socket directory of the region's primary PostgreSQL. Unset or empty skips
        market_data and risk.
    type: str
    default: null
  coordinator_url:
    description: Base URL of the coordinator (for example http://trading-coordinator:8000); empty skips it.
    type: str
    default: ""
  required_metrics:
    description: Metric names that the coordinator's /metrics must expose.
    type: list
    elements: str
    default: [portfolio_value, trading_signals_total, agent_activity_score, circuit_breaker_state]
  agents:  # documented by sapphire.heartbeat; optional here
    required: false
    default: []
  expected_breakers:
    description: Circuit breakers the platform must have registered (for example exchange, market_data).
    type: list
    elements: str
    default: []
  half_open_status:
    description: Status reported for a half-open circuit breaker.
    type: str
    choices: [ok, warn, fail]
    default: warn
  symbols:
    description: Symbols that must have fresh trades; empty means every symbol seen within O(market_data_lookback).
    type: list
    elements: str
    default: []
  market_data_max_age:
    description: Seconds after which a symbol's newest trade is stale.
    type: float
    default: 300
  market_data_max_age_overrides:
    description: Per-symbol market-data thresholds in seconds.
    type: dict
    default: {}
  market_data_lookback:
    description: Seconds of history searched for symbols when O(symbols) is empty.
    type: float
    default: 86400
  check_daily_loss:
    description: Read C(sapphire:portfolio) from Redis for the daily loss check; only with O(redis_host).
    type: bool
    default: true
extends_documentation_fragment:
  - sapphire.health
  - sapphire.key_prefix
  - sapphire.heartbeat
  - sapphire.risk
  - sapphire.positions
  - sapphire.redis
  - sapphire.postgres
  - sapphire.http
  - sapphire.timeout
requirements:
  - redis (redis-py) >= 4, when a Redis check runs
  - psycopg >= 3, when a PostgreSQL check runs
seealso:
  - module: sapphire_heartbeat_info
  - module: sapphire_circuit_breaker_info
  - module: sapphire_coordinator_info
  - module: sapphire_market_data_info
  - module: sapphire_risk_info
  - module: sapphire_positions_info
"""

EXAMPLES = r"""
- name: Check that the primary region is trading
  sapphire_trading_info:
    redis_host: 127.0.0.1
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    postgres_host: 127.0.0.1
    postgres_port: 15432
    postgres_password: "{{ postgres_password }}"
    coordinator_url: http://127.0.0.1:18000
    agents: "{{ trading_agents }}"
    expected_breakers: [exchange, market_data]
  register: trading

- name: Check a warm standby region, whose agents run at zero replicas and must stay silent
  sapphire_trading_info:
    redis_host: 127.0.0.1
    redis_port: 16380
    redis_password: "{{ redis_password }}"
    agents: "{{ trading_agents | map('combine', {'replicas': 0}) }}"
    trading: false
"""

RETURN = r"""
healthy:
  description: True when no component has a failing check.
  returned: always
  type: bool
checks:
  description: >-
    The checks of every component in the order heartbeats, circuit_breakers, coordinator, market_data, risk,
    positions,
    each named <component>/<check> (for example heartbeats/heartbeat:momentum).
  returned: always
  type: list
  elements: dict
problems:
  description: The problems of every component, in the same order.
  returned: always
  type: list
  elements: str
reports:
  description: >-
    The result of each component, keyed heartbeats (what M(sapphire_heartbeat_info) returns), circuit_breakers
    (M(sapphire_circuit_breaker_info)), coordinator (M(sapphire_coordinator_info)), market_data
    (M(sapphire_market_data_info)), risk (M(sapphire_risk_info)) and positions (M(sapphire_positions_info)), in that
    order; each is what that module
    returns for the same options (healthy, target, checks, problems and its own keys). A component that did not
    run has target set to its name, healthy true, no problems and a single check named after it with status
    skipped and a msg saying why.
  returned: always
  type: dict
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_connections import (
    HTTP_ARGUMENT_SPEC,
    POSTGRES_ARGUMENT_SPEC,
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    http_get,
    postgres_connect,
    redis_client,
    require_psycopg,
    require_redis,
    validate_params,
)
from ansible.module_utils.sapphire_health import fail, finish, new_result, skipped
from ansible.module_utils.sapphire_trading import (
    BREAKER_SPEC,
    COORDINATOR_SPEC,
    HEARTBEAT_SPEC,
    MARKET_DATA_SPEC,
    POSITIONS_SPEC,
    RISK_SPEC,
    breaker_collect,
    coordinator_collect,
    heartbeat_collect,
    market_data_collect,
    normalise_agents,
    positions_collect,
    risk_collect,
    validate_max_age_overrides,
    validate_url,
)

COMPONENTS = ("heartbeats", "circuit_breakers", "coordinator", "market_data", "risk", "positions")
# A warm standby's stores are replicas, each at its own lag: its positions are not reconciled either.
TRADING_ONLY = ("coordinator", "market_data", "risk", "positions")
STANDBY = "warm standby region (agents scaled to zero): not trading"
NO_REDIS = "no Redis endpoint for this cluster (set validate_redis_endpoint)"
NO_POSTGRES = "no PostgreSQL endpoint for this cluster (set validate_postgres_endpoint)"
# The option naming each component's endpoint, and the reason it is skipped when that option is empty.
ENDPOINTS = {
    "heartbeats": ("redis_host", NO_REDIS),
    "circuit_breakers": ("redis_host", NO_REDIS),
    "coordinator": ("coordinator_url", "no coordinator URL (set validate_coordinator_url)"),
    "market_data": ("postgres_host", NO_POSTGRES),
    "risk": ("postgres_host", NO_POSTGRES),
    "positions": ("redis_host", NO_REDIS),
}
# Options this module names differently from the single module (this module's name: the single module's).
RENAMED = {
    "circuit_breakers": {"expected_breakers": "expected"},
    "coordinator": {"coordinator_url": "url"},
    "market_data": {"market_data_max_age": "max_age", "market_data_max_age_overrides": "max_age_overrides",
                    "market_data_lookback": "lookback"},
}


def renamed(spec: dict[str, dict[str, Any]], component: str) -> dict[str, dict[str, Any]]:
    """A single module's spec fragment under this module's option names."""
    ours = {theirs: mine for mine, theirs in RENAMED.get(component, {}).items()}
    return {ours.get(name, name): option for name, option in spec.items()}


ARGUMENT_SPEC = argument_spec(
    REDIS_ARGUMENT_SPEC, POSTGRES_ARGUMENT_SPEC, renamed(HTTP_ARGUMENT_SPEC, "coordinator"), TIMEOUT_ARGUMENT_SPEC,
    HEARTBEAT_SPEC, renamed(BREAKER_SPEC, "circuit_breakers"), COORDINATOR_SPEC,
    renamed(MARKET_DATA_SPEC, "market_data"), RISK_SPEC, POSITIONS_SPEC,
    redis_host={"type": "str"},
    postgres_host={"type": "str"},
    coordinator_url={"type": "str", "default": ""},
    agents={"type": "list", "elements": "dict", "default": []},
    checks={"type": "list", "elements": "str", "choices": list(COMPONENTS), "default": list(COMPONENTS)},
    trading={"type": "bool", "default": True},
)


def component_params(params: dict[str, Any], component: str) -> dict[str, Any]:
    """The params the single module of component would get for the same options."""
    mine = {**params, **{theirs: params[ours] for ours, theirs in RENAMED.get(component, {}).items()}}
    if component == "risk":
        mine["check_daily_loss"] = bool(params["check_daily_loss"] and params["redis_host"])
    return mine


def skip_reason(params: dict[str, Any], component: str) -> str | None:
    """Why component does not run (None: it runs)."""
    option, missing = ENDPOINTS[component]
    if component not in params["checks"]:
        return f"not selected (checks: {', '.join(params['checks']) or 'none'})"
    if component in TRADING_ONLY and not params["trading"]:
        return STANDBY
    if not params[option]:
        return missing
    if component == "positions" and not params["postgres_host"]:
        return NO_POSTGRES
    return None


def not_run(component: str, status: Callable[..., dict[str, Any]], msg: str) -> dict[str, Any]:
    """The report of a component that did not run or stopped: one check named after it."""
    result = new_result(component)
    result["checks"].append(status(component, msg))
    return finish(result)


def collect(params: dict[str, Any], connect_redis: Callable[[dict[str, Any]], Any] = redis_client,
            connect_pg: Callable[[dict[str, Any]], Any] = postgres_connect,
            get: Callable[..., tuple[int | None, str, str | None]] = http_get,
            now: Callable[[], float] = time.time) -> dict[str, Any]:
    """The six reports, the components that run checked concurrently; params hold normalised agents."""
    runners: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "heartbeats": lambda mine: heartbeat_collect(mine, mine["agents"], connect_redis, now),
        "circuit_breakers": lambda mine: breaker_collect(mine, connect_redis, now),
        "coordinator": lambda mine: coordinator_collect(mine, get),
        "market_data": lambda mine: market_data_collect(mine, connect_pg),
        "risk": lambda mine: risk_collect(mine, connect_pg, connect_redis),
        "positions": lambda mine: positions_collect(mine, connect_redis, connect_pg, now),
    }
    reports: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        running = {}
        for component in COMPONENTS:
            reason = skip_reason(params, component)
            if reason is None:
                running[component] = pool.submit(runners[component], component_params(params, component))
            else:
                reports[component] = not_run(component, skipped, reason)
        for component, future in running.items():
            try:
                reports[component] = future.result()
            except Exception as exc:  # a check that breaks is a failing check of its component only
                reports[component] = not_run(component, fail, f"the check stopped: {type(exc).__name__}: {exc}")
    ordered = {component: reports[component] for component in COMPONENTS}
    return {
        "changed": False,
        "healthy": all(report["healthy"] for report in ordered.values()),
        "checks": [{**item, "name": f"{component}/{item['name']}"}
                   for component, report in ordered.items() for item in report["checks"]],
        "problems": [problem for report in ordered.values() for problem in report["problems"]],
        "reports": ordered,
    }


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    validate_params(module, ports=("redis_port", "postgres_port"),
                    positive=("connect_timeout", "max_age", "market_data_max_age", "market_data_lookback",
                              "loss_window", "max_hourly_loss"),
                    percents=("max_daily_loss_percent",))
    try:
        params = {**module.params, "agents": normalise_agents(module.params["agents"])}
        validate_max_age_overrides(params["market_data_max_age_overrides"], "market_data_max_age_overrides")
        if params["coordinator_url"]:
            validate_url(params["coordinator_url"], "coordinator_url")
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    running = {component for component in COMPONENTS if skip_reason(params, component) is None}
    daily_loss = "risk" in running and component_params(params, "risk")["check_daily_loss"]
    if running & {"heartbeats", "circuit_breakers", "positions"} or daily_loss:
        require_redis(module)
    if running & {"market_data", "risk", "positions"}:
        require_psycopg(module)
    module.exit_json(**collect(params))


if __name__ == "__main__":
    main()
