#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_circuit_breaker_info
short_description: Report the platform's circuit breakers and which are open, since when
description:
  - Scans the Redis hashes C(sapphire:circuit:<name>) (fields C(state) closed|open|half_open and
    C(since), epoch seconds) and reports one check per breaker. An open breaker fails (the platform
    is cutting off a dependency such as the exchange), a half-open one warns (it is probing).
  - Breakers listed in O(expected) that have no key are reported as a warning, since the platform
    registers its breakers when it starts.
  - An unreachable Redis is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  expected:
    description: Breaker names the platform must have registered (for example exchange, market_data).
    type: list
    elements: str
    default: []
  half_open_status:
    description: Status reported for a half-open breaker.
    type: str
    choices: [ok, warn, fail]
    default: warn
  key_prefix:
    description: Prefix of the platform's Redis keys.
    type: str
    default: sapphire
extends_documentation_fragment:
  - sapphire.redis
  - sapphire.timeout
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - redis (redis-py) >= 4
"""

EXAMPLES = r"""
- name: Check the circuit breakers of the platform
  sapphire_circuit_breaker_info:
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    expected: [exchange, market_data]
"""

RETURN = r"""
healthy:
  description: True when no breaker is open.
  returned: always
  type: bool
target:
  description: The Redis server that was read.
  returned: always
  type: str
checks:
  description: redis_reachable, then circuit:<name> per breaker found or expected.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
breakers:
  description: Every breaker found, with state, since and seconds in that state.
  returned: always
  type: list
  elements: dict
  sample: [{name: exchange, state: open, since: 1763683200.0, age_seconds: 42.0}]
open:
  description: Names of the open breakers.
  returned: always
  type: list
  elements: str
"""

import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_connections import (
    REDIS_ARGUMENT_SPEC,
    TIMEOUT_ARGUMENT_SPEC,
    argument_spec,
    describe_redis_error,
    redis_client,
    redis_endpoint,
    require_redis,
    validate_params,
)
from ansible.module_utils.sapphire_health import fail, finish, fmt_seconds, new_result, ok, warn


def describe_breaker(name: str, data: dict[str, str], now: float) -> dict[str, Any]:
    state = (data.get("state") or "unknown").lower()
    try:
        since = float(data["since"])
        age = round(max(0.0, now - since), 1)
    except (KeyError, ValueError):
        since, age = None, None
    return {"name": name, "state": state, "since": since, "age_seconds": age}


def check_breaker(breaker: dict[str, Any], half_open_status: str) -> dict[str, Any]:
    name, state, age = breaker["name"], breaker["state"], breaker["age_seconds"]
    duration = f" for {fmt_seconds(age)}" if age is not None else ""
    check_name = f"circuit:{name}"
    if state == "closed":
        return ok(check_name, f"circuit breaker {name} closed", breaker, "closed")
    if state == "open":
        return fail(check_name, f"circuit breaker {name} is OPEN{duration}: the platform has cut off {name}; "
                    "check that dependency (exchange API, market data feed) and its credentials", breaker, "closed")
    if state == "half_open":
        builder = {"ok": ok, "warn": warn, "fail": fail}[half_open_status]
        return builder(check_name, f"circuit breaker {name} is half-open{duration} (probing after failures)",
                       breaker, "closed")
    return warn(check_name, f"circuit breaker {name} has an unknown state {state!r}", breaker, "closed")


def evaluate(found: dict[str, dict[str, str]], expected: list[str], now: float,
             half_open_status: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    breakers = [describe_breaker(name, data, now) for name, data in sorted(found.items())]
    checks = [check_breaker(item, half_open_status) for item in breakers]
    for name in expected:
        if name not in found:
            checks.append(warn(f"circuit:{name}", f"circuit breaker {name} is not registered in Redis; is the "
                               "coordinator running against this Redis?", "missing", "closed"))
    if not checks:
        checks.append(ok("circuit_breakers", "no circuit breakers registered", [], "closed"))
    return checks, breakers


def collect(params: dict[str, Any], connect: Callable[[dict[str, Any]], Any],
            now: Callable[[], float] = time.time) -> dict[str, Any]:
    result = new_result(redis_endpoint(params))
    result.update(breakers=[], open=[])
    head = f"{params['key_prefix']}:circuit:"
    try:
        client = connect(params)
        keys = sorted(client.scan_iter(match=head + "*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        found = {key[len(head):]: data or {} for key, data in zip(keys, pipe.execute(), strict=False)}
    except Exception as exc:  # unreachable Redis is a finding
        result["checks"].append(fail("redis_reachable", describe_redis_error(exc, params), False, True))
        return finish(result)
    checks, breakers = evaluate(found, params["expected"], now(), params["half_open_status"])
    result["checks"] = [ok("redis_reachable", f"{len(found)} circuit breaker(s) read", True, True), *checks]
    result["breakers"] = breakers
    result["open"] = [item["name"] for item in breakers if item["state"] == "open"]
    return finish(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            expected={"type": "list", "elements": "str", "default": []},
            half_open_status={"type": "str", "choices": ["ok", "warn", "fail"], "default": "warn"},
            key_prefix={"type": "str", "default": "sapphire"},
        ),
        supports_check_mode=True,
    )
    validate_params(module, ports=("redis_port",), positive=("connect_timeout",))
    require_redis(module)
    module.exit_json(**collect(module.params, redis_client))


if __name__ == "__main__":
    main()
