#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_heartbeat_info
short_description: Check that every trading agent sends a fresh heartbeat, and report the halt flag
description:
  - Reads the Redis hashes C(sapphire:agent:<name>:heartbeat) (fields C(ts), C(status), C(tier),
    C(version)) of every agent in O(agents) and reports, per agent, whether the heartbeat is
    younger than O(max_age). Agents with C(replicas) 0 (scaled to zero, as in a warm DR region)
    are expected to be silent and are reported as C(skipped).
  - Reports stale and missing heartbeats (fail), agents whose heartbeat says C(stopped) (fail) or
    C(degraded) (warn), agents whose heartbeat tier differs from the configured tier (warn), and
    heartbeat keys of agents that are not in O(agents) (warn, O(check_unexpected)).
  - Reports the halt flag C(sapphire:halt) with its reason and actor; its status is O(halt_status).
  - An unreachable Redis is a failing check, never a module failure.
version_added: "1.0.0"
author: sapphire-ops
options:
  agents:
    description:
      - The agents that must be alive, in the shape of the inventory's C(trading_agents)
        (other keys are ignored).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Agent name (the C(<name>) of the heartbeat key).
        type: str
        required: true
      tier:
        description: Configured resource tier; compared with the heartbeat's C(tier) field.
        type: str
      replicas:
        description: Configured replicas; 0 means the agent is expected to be silent.
        type: int
        default: 1
  max_age:
    description: Seconds after which a heartbeat is stale.
    type: float
    default: 60
  halt_status:
    description: Status of the C(trading_halt) check when C(sapphire:halt) is present.
    type: str
    choices: [ok, warn, fail]
    default: warn
  check_unexpected:
    description: Report heartbeat keys of agents not in O(agents).
    type: bool
    default: true
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
- name: Check the heartbeats of the ensemble
  sapphire_heartbeat_info:
    redis_port: 16379
    redis_password: "{{ redis_password }}"
    agents: "{{ trading_agents }}"
    max_age: 60

- name: Check a warm DR region, where agents run at zero replicas and must stay silent
  sapphire_heartbeat_info:
    redis_port: 16380
    redis_password: "{{ redis_password }}"
    agents: "{{ trading_agents | map('combine', {'replicas': 0}) }}"
"""

RETURN = r"""
healthy:
  description: True when no check failed.
  returned: always
  type: bool
target:
  description: The Redis server that was read.
  returned: always
  type: str
checks:
  description: >-
    heartbeat:<agent> per agent, heartbeat_unexpected and trading_halt (each with name, status,
    observed, threshold, msg); redis_reachable first.
  returned: always
  type: list
  elements: dict
problems:
  description: Sentences an operator can act on.
  returned: always
  type: list
  elements: str
stale:
  description: Agents whose heartbeat is older than O(max_age).
  returned: always
  type: list
  elements: str
missing:
  description: Agents without a heartbeat key.
  returned: always
  type: list
  elements: str
unexpected:
  description: Agents with a heartbeat key that are not in O(agents).
  returned: always
  type: list
  elements: str
tier_mismatch:
  description: Agents whose heartbeat reports another tier than configured.
  returned: always
  type: list
  elements: dict
  sample: [{agent: scalping, configured: accelerated, reported: standard}]
halt:
  description: Content of C(sapphire:halt) (reason, actor, ts) when trading is halted, else null.
  returned: always
  type: dict
"""

import json
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
from ansible.module_utils.sapphire_health import fail, finish, fmt_seconds, new_result, ok, skipped, warn


def heartbeat_key(prefix: str, agent: str) -> str:
    return f"{prefix}:agent:{agent}:heartbeat"


def agent_from_key(prefix: str, key: str) -> str | None:
    head, tail = f"{prefix}:agent:", ":heartbeat"
    if key.startswith(head) and key.endswith(tail):
        return key[len(head):-len(tail)]
    return None


def check_agent(agent: dict[str, Any], beat: dict[str, str], now: float, max_age: float) -> dict[str, Any]:
    name = agent["name"]
    check_name = f"heartbeat:{name}"
    replicas = agent.get("replicas", 1)
    if replicas == 0:
        return skipped(check_name, f"agent {name} is scaled to zero; no heartbeat expected",
                       "scaled to zero", None)
    if not beat:
        return fail(check_name, f"agent {name} has no heartbeat (its heartbeat key is missing): is its Deployment "
                    "running and can it reach Redis?", "missing", max_age)
    try:
        age = max(0.0, now - float(beat.get("ts", "")))
    except ValueError:
        return fail(check_name, f"agent {name} heartbeat has no valid ts field ({beat.get('ts')!r})",
                    beat.get("ts"), max_age)
    observed = {"age_seconds": round(age, 1), "status": beat.get("status"), "tier": beat.get("tier"),
                "version": beat.get("version")}
    if age > max_age:
        return fail(check_name, f"agent {name} heartbeat is stale: last {fmt_seconds(age)} ago (> "
                    f"{fmt_seconds(max_age)}); the agent is hung or crashed", observed, max_age)
    status = beat.get("status", "running")
    if status == "stopped":
        return fail(check_name, f"agent {name} reports status stopped", observed, max_age)
    tier = agent.get("tier")
    if tier and beat.get("tier") and beat["tier"] != tier:
        return warn(check_name, f"agent {name} runs in tier {beat['tier']} but is configured for {tier}; "
                    "redeploy the agents role", observed, max_age)
    if status == "degraded":
        return warn(check_name, f"agent {name} reports status degraded", observed, max_age)
    return ok(check_name, f"agent {name} alive ({fmt_seconds(age)} ago, {status})", observed, max_age)


def check_halt(raw: str | None, status: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if raw is None:
        return ok("trading_halt", "trading is not halted", False, "absent"), None
    parsed = None
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    halt = parsed if isinstance(parsed, dict) else {"reason": raw}
    when = halt.get("ts")
    msg = (f"trading is HALTED (sapphire:halt set by {halt.get('actor', 'unknown')}"
           + (f" at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(float(when)))}"
              if isinstance(when, (int, float)) else "")
           + f": {halt.get('reason', 'no reason given')}); resume.yml clears it")
    builder = {"ok": ok, "warn": warn, "fail": fail}[status]
    return builder("trading_halt", msg, halt, "absent"), halt


def evaluate(agents: list[dict[str, Any]], beats: dict[str, dict[str, str]], present: set[str],
             halt_raw: str | None, now: float, params: dict[str, Any]) -> dict[str, Any]:
    """Checks and lists from the heartbeats read (beats: agent → hash; present: agents with a key)."""
    checks = [check_agent(agent, beats.get(agent["name"], {}), now, params["max_age"]) for agent in agents]
    configured = {agent["name"] for agent in agents}
    unexpected = sorted(present - configured)
    if not params["check_unexpected"]:
        checks.append(skipped("heartbeat_unexpected", "unexpected agents not checked", None, None))
    elif unexpected:
        checks.append(warn("heartbeat_unexpected", f"heartbeats from agents not in trading_agents: "
                           f"{', '.join(unexpected)} (left over from a removed agent, or another deployment "
                           "writing to this Redis)", unexpected, []))
    else:
        checks.append(ok("heartbeat_unexpected", "no heartbeats from unknown agents", [], []))
    halt_check, halt = check_halt(halt_raw, params["halt_status"])
    checks.append(halt_check)
    lists: dict[str, Any] = {"stale": [], "missing": [], "tier_mismatch": [], "unexpected": unexpected,
                             "halt": halt}
    for agent, item in zip(agents, checks, strict=False):
        if item["observed"] == "missing":
            lists["missing"].append(agent["name"])
        elif item["status"] == "fail" and "stale" in item["msg"]:
            lists["stale"].append(agent["name"])
        beat = beats.get(agent["name"], {})
        if agent.get("replicas", 1) and agent.get("tier") and beat.get("tier") and beat["tier"] != agent["tier"]:
            lists["tier_mismatch"].append({"agent": agent["name"], "configured": agent["tier"],
                                           "reported": beat["tier"]})
    lists["checks"] = checks
    return lists


def normalise_agents(module: Any) -> list[dict[str, Any]]:
    """The agents option as {name, tier, replicas}; fail_json names the bad item."""
    agents = []
    for index, item in enumerate(module.params["agents"]):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            module.fail_json(msg=f"argument 'agents' item {index} has no 'name' (expected the shape of "
                             "trading_agents: name, strategy, tier, replicas)")
        try:
            replicas = int(item.get("replicas", 1))
        except (TypeError, ValueError):
            module.fail_json(msg=f"argument 'agents' item {index} ({name}): replicas must be an integer, got "
                             f"{item.get('replicas')!r}")
        if replicas < 0:
            module.fail_json(msg=f"argument 'agents' item {index} ({name}): replicas must be zero or more")
        agents.append({"name": name, "tier": item.get("tier"), "replicas": replicas})
    return agents


def collect(params: dict[str, Any], agents: list[dict[str, Any]],
            connect: Callable[[dict[str, Any]], Any], now: Callable[[], float] = time.time) -> dict[str, Any]:
    result = new_result(redis_endpoint(params))
    result.update(stale=[], missing=[], unexpected=[], tier_mismatch=[], halt=None)
    prefix = params["key_prefix"]
    try:
        client = connect(params)
        pipe = client.pipeline(transaction=False)
        for agent in agents:
            pipe.hgetall(heartbeat_key(prefix, agent["name"]))
        pipe.get(f"{prefix}:halt")
        replies = pipe.execute()
        present: set[str] = set()
        if params["check_unexpected"]:
            for key in client.scan_iter(match=heartbeat_key(prefix, "*"), count=1000):
                name = agent_from_key(prefix, key)
                if name:
                    present.add(name)
    except Exception as exc:  # unreachable Redis is a finding
        result["checks"].append(fail("redis_reachable", describe_redis_error(exc, params), False, True))
        return finish(result)
    beats = {agent["name"]: reply or {} for agent, reply in zip(agents, replies[:-1], strict=False)}
    present |= {name for name, beat in beats.items() if beat}
    outcome = evaluate(agents, beats, present, replies[-1], now(), params)
    result["checks"] = [ok("redis_reachable", "heartbeats read", True, True), *outcome.pop("checks")]
    result.update(outcome)
    return finish(result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(
            REDIS_ARGUMENT_SPEC, TIMEOUT_ARGUMENT_SPEC,
            agents={"type": "list", "elements": "dict", "required": True},
            max_age={"type": "float", "default": 60.0},
            halt_status={"type": "str", "choices": ["ok", "warn", "fail"], "default": "warn"},
            check_unexpected={"type": "bool", "default": True},
            key_prefix={"type": "str", "default": "sapphire"},
        ),
        supports_check_mode=True,
    )
    validate_params(module, ports=("redis_port",), positive=("connect_timeout", "max_age"))
    agents = normalise_agents(module)
    require_redis(module)
    module.exit_json(**collect(module.params, agents, redis_client))


if __name__ == "__main__":
    main()
