"""The decisions of a DR switch (dr-failover.yml, dr-failback.yml; role dr), as tested functions.

- sapphire_dr_plan: from the topology and the target region, which PostgreSQL and Redis server is promoted,
  which one is fenced, every host's role in the new layout, which clusters are fenced and the new epoch.
- sapphire_dr_preflight: from the measurements of the old and the new servers (sapphire_postgres_info,
  sapphire_redis_info), the lag against the RPO and whether the switch may go ahead: refused when there is
  nothing to promote, or when the old side cannot be reached and the operator has not declared the old region
  lost (dr_old_region_lost); above the RPO only with dr_force.
- sapphire_dr_loss: the data a promotion lost, measured (the old PostgreSQL's last WAL position against what
  the new one replayed; Redis replication offsets), or "not measured" and why.
- sapphire_dr_report / sapphire_dr_markdown: the drill report of one run.

An endpoint is the topology's {host, address, port, region, role}; a measurement is the result of the
*_info module (for PostgreSQL with `position`, for Redis with `info`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError, AnsibleUndefinedVariable

SERVICES = {
    # service: (role variable, upstream variable, name of a following server's role)
    "postgres": ("postgres_replication_role", "postgres_primary_host", "standby"),
    "redis": ("redis_replication_role", "redis_replica_of", "replica"),
}
NAMES = {"postgres": "PostgreSQL", "redis": "Redis"}
LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: Any) -> int | None:
    """A PostgreSQL WAL position ('16/B374D848') as a byte number; None when it is not one."""
    match = LSN.match(str(text or "").strip())
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16) if match else None


def _pick_new(servers: list[dict[str, Any]], target: str) -> dict[str, Any] | None:
    """The server of the target region to promote: its current primary if it has one, else its first follower."""
    mine = [item for item in servers if item["region"] == target]
    mine.sort(key=lambda item: (item["role"] != "primary", item["host"]))
    return mine[0] if mine else None


# Providers of external data services (<service>_external_provider) dr-failover switches: self_managed servers it
# promotes over the network itself; managed ones no Ansible module promotes (MANUAL_PROVIDERS) the operator promotes
# in the provider between a first run (fence, measure, instructions) and a second one with dr_promoted_in_provider.
MANUAL_PROVIDERS = {"cloudsql", "elasticache", "memorystore"}
# Providers whose promotion an entry point of the postgres role asks of the provider's API, then reads back.
PROVIDER_PROMOTIONS = {"rds": "the RDS read replica promoted (amazon.aws.rds_instance read_replica false, "
                              "PromoteReadReplica where the collection does not act), read back"}
SWITCHED_PROVIDERS = {"self_managed"} | MANUAL_PROVIDERS | set(PROVIDER_PROMOTIONS)
MODE_REFUSALS = {
    "kubernetes": "each region's in-cluster {name} ({service}_mode kubernetes) is a standalone database with no "
                  "replica in the other region: a failover would land on an empty one",
}


def mode_problems(modes: Mapping[str, Any] | None, topology: Mapping[str, Any] | None = None) -> list[str]:
    """Why the data services cannot be switched (sapphire_dr_plan's `modes`, {service: <service>_mode}). Host mode
    has a replica in the other region that the roles promote on its host. External mode is switched over the network
    when the service's endpoints (group <service>_endpoints) are declared and their provider is one this toolkit
    promotes (SWITCHED_PROVIDERS); the others are refused with what to do instead."""
    problems = []
    for service in SERVICES:
        mode = str((modes or {}).get(service) or "host")
        if mode == "host":
            continue
        if mode != "external":
            problems.append(MODE_REFUSALS.get(mode, "{service}_mode " + mode + " is not one dr-failover switches")
                            .format(name=NAMES[service], service=service))
            continue
        servers = list(((topology or {}).get(service) or {}).get("servers") or [])
        if not servers:
            problems.append(f"{NAMES[service]} is a service outside the clusters ({service}_mode external) with no "
                            f"endpoint declared per region (hosts of group {service}_endpoints with sapphire_region, "
                            f"{service}_external_host, {service}_external_port and {service}_external_provider): "
                            "there is nothing to promote")
            continue
        other = sorted({item.get("provider") or "unset" for item in servers} - SWITCHED_PROVIDERS)
        if other:
            problems.append(f"{NAMES[service]} provider {', '.join(other)} ({service}_external_provider) is not one "
                            f"dr-failover switches (self_managed, {', '.join(sorted(PROVIDER_PROMOTIONS))}; "
                            f"{', '.join(sorted(MANUAL_PROVIDERS))} with the operator): fail it over in the provider "
                            "and point the endpoints at the new primary")
    return problems


def plan(topology: Mapping[str, Any], target: str, operation: str = "failover",
         modes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Filter: the switch to `target` from the live region of `topology` (sapphire_topology). modes: each data
    service's mode ({postgres: postgres_mode, redis: redis_mode}); one that is not `host` is a problem (refused)."""
    if not target:
        raise AnsibleFilterError("dr_target_region must name a region (primary or dr)")
    source = str(topology.get("live_region") or "primary")
    regions = dict((topology.get("clusters") or {}).get("by_region") or {})
    layout: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    problems: list[str] = mode_problems(modes, topology)
    for service, (role_key, upstream_key, follower) in SERVICES.items():
        servers = list((topology.get(service) or {}).get("servers") or [])
        new = _pick_new(servers, target)
        olds = [item for item in servers if item["role"] == "primary" and (new is None or item["host"] != new["host"])]
        olds.sort(key=lambda item: (item["region"] != source, item["host"]))
        old = olds[0] if olds else None
        provider = (new or old or {}).get("provider", "")
        services[service] = {"new": new, "old": old, "others": [item for item in olds[1:]], "provider": provider,
                             "manual": provider in MANUAL_PROVIDERS}
        if servers and new is None:
            problems.append(f"region {target} has no {service} server (a host of {service}_hosts with sapphire_region "
                            f"{target}) to promote")
        for item in servers if new else []:
            promoted = item["host"] == new["host"]
            layout[item["host"]] = {role_key: "primary" if promoted else follower,
                                    upstream_key: "" if promoted else new["host"]}
            if service == "postgres" and old is not None and item["host"] == old["host"]:
                # Stopped read-only by the fence until dr-failback re-seeds it: validate reports it as fenced.
                layout[item["host"]]["postgres_fenced"] = True
    for region, hosts in regions.items():
        for host in hosts:
            layout[host] = {"agents_scale_to_zero": region != target}
    return {
        "operation": operation,
        "from": source,
        "to": target,
        "noop": source == target,
        "epoch": int(topology.get("epoch") or 0) + 1,
        "postgres": services["postgres"],
        "redis": services["redis"],
        "layout": layout,
        # The inventory describes the home layout (the primary region live): no override when returning to it.
        "host_overrides": {} if target == "primary" else layout,
        "clusters": {"live": list(regions.get(target, [])),
                     "fenced": sorted(host for region, hosts in regions.items() if region != target for host in hosts)},
        "problems": problems,
    }


def _reachable(result: Mapping[str, Any] | None, service: str) -> bool:
    """Whether an *_info result says the server answered."""
    for check in (result or {}).get("checks") or []:
        if check.get("name") == f"{service}_reachable":
            return check.get("status") == "ok"
    return False


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _postgres_lag(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """Lag of the PostgreSQL standby: bytes against the old primary's position when it answers, seconds of
    replay delay; with the old primary gone, the time since the standby last heard from it."""
    position = new.get("position") or {}
    if new.get("role") == "primary":
        return {"bytes": 0, "seconds": 0.0, "how": "already a primary (promoted by an earlier run)"}
    replay = parse_lsn(position.get("replay_lsn"))
    delay = _float(position.get("replay_delay_seconds"))
    if old is not None:
        behind = parse_lsn((old.get("position") or {}).get("lsn"))
        lag_bytes = max(0, behind - replay) if behind is not None and replay is not None else None
        return {"bytes": lag_bytes, "seconds": delay if delay is not None else None,
                "how": "old primary's WAL position against the standby's replay position"}
    # With the old primary gone, the standby has everything up to its last replayed commit: what can be lost is at
    # most what was written since (an upper bound; exact when the primary kept writing). The receiver's last contact
    # only exists while a link is up; neither known: the lag cannot be measured (dr_force needed).
    contact = _float(position.get("last_contact_seconds"))
    replay_age = _float(position.get("last_replay_age_seconds"))
    known = [value for value in (contact, replay_age) if value is not None]
    return {"bytes": None, "seconds": max(known) if known else None,
            "how": "old primary unreachable: time since the standby's last replayed commit (an upper bound of the "
                   "writes that can be missing; the loss is not measured)"}


def _redis_lag(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """Lag of the Redis replica: offsets against the old primary when it answers, else how long the link is down."""
    info = new.get("info") or {}
    if info.get("role") == "master":
        return {"bytes": 0, "seconds": 0.0, "how": "already a primary (promoted by an earlier run)"}
    mine = info.get("slave_repl_offset")
    if old is not None:
        theirs = (old.get("info") or {}).get("master_repl_offset")
        lag_bytes = max(0, int(theirs) - int(mine)) if theirs is not None and mine is not None else None
        seconds = 0.0 if lag_bytes == 0 else _float(info.get("master_last_io_seconds_ago"))
        return {"bytes": lag_bytes, "seconds": seconds, "how": "old primary's offset against the replica's offset"}
    down = _float(info.get("master_link_down_since_seconds"))
    io_ago = _float(info.get("master_last_io_seconds_ago"))
    seconds = down if down is not None and down >= 0 else io_ago
    return {"bytes": None, "seconds": seconds,
            "how": "old primary unreachable: time since the replica last heard from it (the loss is not measured)"}


def preflight(the_plan: Mapping[str, Any], measured: Mapping[str, Any], rpo_seconds: Any, force: Any = False,
              old_region_lost: Any = False) -> dict[str, Any]:
    """Filter: may the switch go ahead? measured = {postgres: {new, old}, redis: {new, old}}, each an *_info result
    (or None when the server was not measured).

    refuse: reasons no flag overrides (nothing to promote; the old side unreachable and the old region not declared
    lost). over_rpo: lag above dr_rpo_seconds or not measurable; dr_force goes past them. fence_verified is false
    when a part of the old side could not be reached (dr_old_region_lost): it cannot be fenced, only declared lost.
    """
    rpo = float(rpo_seconds)
    refuse: list[str] = []
    over_rpo: list[str] = []
    services: dict[str, dict[str, Any]] = {}
    unreachable_old: list[str] = []
    for service in SERVICES:
        chosen = the_plan.get(service) or {}
        new_ep, old_ep = chosen.get("new"), chosen.get("old")
        if new_ep is None:
            services[service] = {"measured": False, "lag_bytes": None, "lag_seconds": None, "old_reachable": None,
                                 "how": f"no {service} server in host mode: nothing to promote"}
            continue
        new = (measured.get(service) or {}).get("new")
        old = (measured.get(service) or {}).get("old")
        if not _reachable(new, service):
            refuse.append(f"{NAMES[service]} {new_ep['host']} does not answer: there is nothing to promote")
            services[service] = {"measured": False, "lag_bytes": None, "lag_seconds": None,
                                 "old_reachable": _reachable(old, service) if old_ep else None,
                                 "how": "new unreachable"}
            continue
        if service == "postgres" and new.get("role") == "primary" and new_ep.get("fenced"):
            live = f" {old_ep['host']}" if old_ep else ""
            refuse.append(f"PostgreSQL {new_ep['host']} is a former primary fenced by an earlier switch, not a "
                          f"standby of the live primary{live}: it has a history of its own since the fork. It must be "
                          "re-seeded as a standby of the live primary (pg_basebackup, or pg_rewind; by its owner for "
                          "an external server) before it can be promoted")
            services[service] = {"measured": False, "lag_bytes": None, "lag_seconds": None,
                                 "old_reachable": _reachable(old, service) if old_ep else None,
                                 "how": "a fenced former primary, not a standby"}
            continue
        old_reachable = _reachable(old, service) if old_ep else None
        down_on_host = bool(old_ep) and service == "postgres" and down_on_reachable_host(old)
        if old_ep and not old_reachable and not down_on_host:
            unreachable_old.append(f"{NAMES[service]} {old_ep['host']}")
        lag = (_postgres_lag if service == "postgres" else _redis_lag)(new, old if old_reachable else None)
        how = lag["how"]
        if down_on_host:
            how = ("old primary down on a reachable host (fenced on its disk, its loss measured from the end of its "
                   "WAL after the fence); before the fence: " + how)
        services[service] = {"measured": True, "lag_bytes": lag["bytes"], "lag_seconds": lag["seconds"],
                             "old_reachable": old_reachable, "old_down_on_host": down_on_host, "how": how}
        paused = " (WAL replay is paused)" if (new.get("position") or {}).get("paused") else ""
        behind = f", {lag['bytes']} bytes behind" if lag["bytes"] else ""
        if lag["seconds"] is None:
            over_rpo.append(f"{NAMES[service]} lag of {new_ep['host']} cannot be measured{behind}{paused}")
        elif lag["seconds"] > rpo:
            over_rpo.append(f"{NAMES[service]} {new_ep['host']} lags {lag['seconds']:.1f} s > dr_rpo_seconds {rpo:g}"
                            f"{behind}{paused}")
    lost = bool(old_region_lost)
    if unreachable_old and not lost:
        refuse.append(f"the old side cannot be reached ({', '.join(unreachable_old)}): it can be neither fenced nor "
                      "measured. If region " + str(the_plan.get("from")) + " is really lost, declare it with "
                      "-e dr_old_region_lost=true (and confirm); the report will say the fence was not verified")
    allowed = not refuse and (not over_rpo or bool(force))
    return {"allowed": allowed, "refuse": refuse, "over_rpo": over_rpo, "forced": bool(force) and bool(over_rpo),
            "old_region_lost": lost, "unreachable_old": unreachable_old,
            "fence_verified": not unreachable_old, "services": services,
            "fence": fence_targets(the_plan, unreachable_old)}


def measurements(the_plan: Mapping[str, Any], hostvars: Mapping[str, Any],
                 names: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Filter: {service: {new, old}} of the registered *_info results of the plan's servers (None when a server
    was not measured), from hostvars; names maps the service to the registered variable."""
    names = dict(names or {"postgres": "__dr_pg_measured", "redis": "__dr_redis_measured"})
    found: dict[str, dict[str, Any]] = {}
    for service, variable in names.items():
        found[service] = {}
        for side in ("new", "old"):
            endpoint = (the_plan.get(service) or {}).get(side)
            result = None
            if endpoint:
                try:
                    result = hostvars[endpoint["host"]].get(variable)
                except (KeyError, AnsibleUndefinedVariable):
                    result = None
            found[service][side] = None if not result or result.get("skipped") else dict(result)
    # An old PostgreSQL that did not answer was probed on its host (postgres role, probe entry point).
    old = (the_plan.get("postgres") or {}).get("old")
    if old and found.get("postgres", {}).get("old") is not None:
        try:
            probe = hostvars[old["host"]].get("postgres_probe")
        except (KeyError, AnsibleUndefinedVariable):
            probe = None
        if probe:
            found["postgres"]["old"]["probe"] = dict(probe)
    return found


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def down_on_reachable_host(result: Mapping[str, Any] | None) -> bool:
    """Whether an old PostgreSQL that does not answer is down on a host Ansible reaches with its data directory
    there: it can be fenced on its disk (standby.signal) and its loss measured from the end of its WAL."""
    probe = (result or {}).get("probe") or {}
    return not _reachable(result, "postgres") and _truthy(probe.get("data")) and not _truthy(probe.get("running"))


def fence_targets(the_plan: Mapping[str, Any], unreachable_old: list[str]) -> dict[str, Any]:
    """Filter: who is fenced. The old Redis (halt flag, then made a replica of the new primary), the old PostgreSQL
    (stopped with standby.signal), every cluster outside the target region (agents and coordinator to zero, egress to
    the exchanges removed, workload stopped); an unreachable part is listed as not fenced."""
    skipped = set(unreachable_old)
    targets: dict[str, Any] = {"clusters": list((the_plan.get("clusters") or {}).get("fenced") or []), "not_fenced": []}
    for service in SERVICES:
        old = (the_plan.get(service) or {}).get("old")
        name = f"{NAMES[service]} {old['host']}" if old else ""
        if old and name in skipped:
            targets[service] = ""
            targets["not_fenced"].append(name)
        else:
            targets[service] = old["host"] if old else ""
    return targets


def check_walk(the_plan: Mapping[str, Any], gate: Mapping[str, Any], catchup_seconds: Any = 60) -> list[str]:
    """Filter: what a --check run of the switch found and would do, step by step; the reads it made for real."""
    fence = gate.get("fence") or {}
    pg, rd = the_plan.get("postgres") or {}, the_plan.get("redis") or {}
    host = (lambda endpoint: endpoint["host"] if endpoint else "none")  # noqa: E731
    lines = [f"plan: {the_plan.get('operation')} {the_plan.get('from')} -> {the_plan.get('to')}, epoch "
             f"{the_plan.get('epoch')}"]
    for service, item in (gate.get("services") or {}).items():
        lines.append(f"measure (ran for real, read-only): {NAMES[service]} lag {item.get('lag_seconds')} s, "
                     f"{item.get('lag_bytes')} bytes ({item.get('how')})")
    if not gate.get("allowed"):
        lines.append("REFUSED: " + "; ".join(list(gate.get("refuse") or []) + list(gate.get("over_rpo") or [])))
        lines.append("once that is resolved, it would:")
    if fence.get("redis"):
        lines.append(f"fence: would set sapphire:halt and CLIENT PAUSE WRITE on Redis {fence['redis']}")
    if fence.get("clusters"):
        lines.append(f"fence: would scale the agents, the accelerated agents and the coordinator of "
                     f"{', '.join(fence['clusters'])} to zero, remove their exchange egress policies and stop the "
                     "workload")
    remote = {service: (the_plan.get(service) or {}).get("provider") not in (None, "", "host") for service in SERVICES}
    if fence.get("postgres") and remote["postgres"]:
        lines.append(f"fence: would forbid the application login of PostgreSQL {fence['postgres']} "
                     f"({pg['provider']}, over the network with the administrative login), make its new transactions "
                     "read-only, end the application's sessions and read its last WAL position")
    elif fence.get("postgres"):
        lines.append(f"fence: would stop PostgreSQL {fence['postgres']} with standby.signal (its pg_controldata is "
                     "read for real)")
    for name in fence.get("not_fenced") or []:
        lines.append(f"fence: NOT fenced, declared lost: {name}")
    lines.append(f"fence: would wait up to {catchup_seconds} s for {host(pg.get('new'))} and {host(rd.get('new'))} "
                 "to replay what the fenced primaries wrote, and measure the loss")
    over = {service: f" ({(the_plan.get(service) or {}).get('provider')}, over the network)" if remote[service] else ""
            for service in SERVICES}
    copied = "its dataset copied to the controller first" if remote["redis"] else "its data copied aside"
    for line in manual_steps(the_plan):
        lines.append(f"promote: would stop after the fence and ask the operator to promote {line}; then run again with "
                     "-e dr_promoted_in_provider=true, which reads the new primary back as writable")
    by_provider = PROVIDER_PROMOTIONS.get(str(pg.get("provider")))
    promotes = [(f"promote PostgreSQL {host(pg.get('new'))} through its provider: {by_provider}" if by_provider
                 else f"pg_promote {host(pg.get('new'))}{over['postgres']}") if not pg.get("manual") else "",
                f"REPLICAOF NO ONE {host(rd.get('new'))}{over['redis']}" if not rd.get("manual") else ""]
    lines.append(f"promote: would {' and '.join(item for item in promotes if item) or 'read the promoted servers'}, "
                 f"write epoch {the_plan.get('epoch')} into both"
                 + (f", and make Redis {fence['redis']} a replica of {host(rd.get('new'))} ({copied})"
                    if fence.get("redis") and not rd.get("manual") else "")
                 + (f"; Redis {fence['redis']} stays a primary fenced by the halt flag only ({rd.get('provider')} "
                    "does not let it follow over the network)" if fence.get("redis") and rd.get("manual") else ""))
    live = ", ".join((the_plan.get("clusters") or {}).get("live") or []) or "no cluster"
    lines.append(f"switch: would bring up {live} (namespace egress, agents, coordinator, workload with the new epoch)")
    lines.append("verify: would require one writable primary per datastore and the new primaries healthy")
    lines.append(f"record: would write live region {the_plan.get('to')}, epoch {the_plan.get('epoch')} to the "
                 "platform state and the drill report")
    return lines


# What the operator does in each provider that no Ansible module promotes (the manual mode's instructions).
PROVIDER_STEPS = {
    "cloudsql": "promote the cross-region replica to a standalone primary (gcloud sql instances promote-replica "
                "<its instance>)",
    "memorystore": "fail over to the cross-region replica, making it the primary (gcloud redis instances failover, or "
                   "detach the secondary instance)",
    "elasticache": "promote the secondary cluster of the global datastore to primary (aws elasticache "
                   "failover-global-replication-group)",
}


def manual_steps(the_plan: Mapping[str, Any]) -> list[str]:
    """Filter: what the operator must promote in the provider, one line per datastore of a manual provider."""
    lines = []
    for service in SERVICES:
        chosen = the_plan.get(service) or {}
        new = chosen.get("new")
        if chosen.get("manual") and new:
            lines.append(f"{NAMES[service]} {new['host']} ({new['address']}:{new['port']}, region {new['region']}) in "
                         f"{chosen['provider']}: {PROVIDER_STEPS.get(chosen['provider'], 'promote it')}")
    return lines


def loss(service: str, old_last: Any, new_replayed: Any, why_not: str = "", promoted_before: Any = False
         ) -> dict[str, Any]:
    """Filter: what the promotion lost, measured: bytes the old primary wrote that the new one never got
    (PostgreSQL: old last WAL position - new replayed position; Redis: old offset - new offset). Not measured when
    either side is unknown; `why` says why.

    promoted_before: the new server was promoted before this run (by the operator in a managed provider). The old
    position is then read after the fork, and a fenced primary keeps writing bytes that are not data (a checkpoint, a
    standby snapshot, autovacuum; Redis replication pings): more than 0 bytes is not a measured loss but an unknown
    one."""
    if service == "postgres":
        old_value, new_value = parse_lsn(old_last), parse_lsn(new_replayed)
    else:
        old_value = int(old_last) if str(old_last or "").isdigit() else None
        new_value = int(new_replayed) if str(new_replayed or "").isdigit() else None
    if old_value is None or new_value is None:
        missing = "the old primary's last position" if old_value is None else "the new primary's position"
        return {"measured": False, "bytes": None, "why": why_not or f"{missing} is unknown"}
    lost = max(0, old_value - new_value)
    if lost and _truthy(promoted_before):
        return {"measured": False, "bytes": lost, "old": str(old_last), "new": str(new_replayed),
                "why": f"{lost} bytes written by the fenced old primary after the fork, read after the operator's "
                       "promotion: a fenced server's own writes (autovacuum, a checkpoint, a standby snapshot, a "
                       "replication ping; its housekeeping) unless someone wrote past the fence; this run cannot tell "
                       "them apart"}
    return {"measured": True, "bytes": lost, "why": "", "old": str(old_last), "new": str(new_replayed)}


def rpo_verdict(losses: Mapping[str, Any]) -> str:
    """Filter: 'met' only when every datastore's loss was measured and is zero bytes; 'missed' when one measured a
    loss; 'not measured: <why>' otherwise."""
    measured = {name: item for name, item in losses.items() if item}
    if not measured:
        return "not measured: no datastore was promoted"
    if any(item.get("measured") and item.get("bytes") for item in measured.values()):
        return "missed: " + ", ".join(f"{name} lost {item['bytes']} bytes" for name, item in measured.items()
                                      if item.get("measured") and item.get("bytes"))
    unmeasured = [f"{name}: {item.get('why')}" for name, item in measured.items() if not item.get("measured")]
    if unmeasured:
        return "not measured: " + "; ".join(unmeasured)
    return "met: 0 bytes lost (measured)"


def step(steps: list[dict[str, Any]] | None, name: str, started: Any, finished: Any, status: str = "ok",
         detail: Any = "") -> list[dict[str, Any]]:
    """Filter: steps + one step of the drill report {step, started, finished, seconds, status, detail}."""
    start, end = float(started), float(finished)
    entry = {"step": name, "started": start, "finished": end, "seconds": round(end - start, 3), "status": status,
             "detail": detail}
    return [*(steps or []), entry]


def report(the_plan: Mapping[str, Any], steps: list[dict[str, Any]], gate: Mapping[str, Any],
           losses: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """Filter: the drill report of one run: who and why, the plan, every step with its times, the fence, the lag at
    the switch, the measured loss and the RTO from the fence's start to the validated new region."""
    by_name = {item["step"]: item for item in steps}
    fence_start = by_name.get("fence", {}).get("started")
    validated = by_name.get("validate", {}).get("finished")
    rto = round(validated - fence_start, 1) if fence_start is not None and validated is not None else None
    target = float(run.get("rto_target_seconds") or 0)
    return {
        "id": run.get("id"), "operation": the_plan.get("operation"), "from": the_plan.get("from"),
        "to": the_plan.get("to"), "epoch": the_plan.get("epoch"),
        "actor": run.get("actor"), "reason": run.get("reason"), "controller": run.get("controller"),
        "started": run.get("started"), "finished": run.get("finished"),
        "promoted": {service: (the_plan.get(service) or {}).get("new", {}) and the_plan[service]["new"]["host"]
                     for service in SERVICES},
        "fenced": {service: (the_plan.get(service) or {}).get("old", {}) and the_plan[service]["old"]["host"]
                   for service in SERVICES} | {"clusters": (the_plan.get("clusters") or {}).get("fenced", [])},
        "fence_verified": gate.get("fence_verified"), "not_fenced": (gate.get("fence") or {}).get("not_fenced", []),
        "old_region_lost": gate.get("old_region_lost"), "forced": gate.get("forced"),
        "lag_at_switch": gate.get("services"), "over_rpo": gate.get("over_rpo"),
        "loss": dict(losses), "rpo": rpo_verdict(losses), "rpo_target_seconds": run.get("rpo_target_seconds"),
        "rto_seconds": rto, "rto_target_seconds": target,
        "rto": ("not measured: the run did not reach a validated new region" if rto is None
                else ("met" if rto <= target else "missed") + f": {rto} s from the fence to the validated region"),
        "steps": steps,
        "post_fork_export": list(run.get("post_fork_export") or []),
    }


def markdown(data: Mapping[str, Any]) -> str:
    """Filter: the drill report as Markdown for people."""
    fenced = ("yes" if data.get("fence_verified") else
              "NO (old region declared lost; not fenced: " + ", ".join(data.get("not_fenced") or []) + ")")
    forced = " - FORCED past: " + "; ".join(data.get("over_rpo") or []) if data.get("forced") else ""
    lines = [f"# DR {data.get('operation')} {data.get('id')}: region {data.get('from')} -> {data.get('to')}", "",
             f"- by {data.get('actor')} on {data.get('controller')}, reason: {data.get('reason') or '(none given)'}",
             f"- started {data.get('started')}, finished {data.get('finished')}, new epoch {data.get('epoch')}",
             f"- promoted: {data.get('promoted')}; fenced: {data.get('fenced')}",
             f"- fence verified: {fenced}",
             f"- RTO {data.get('rto')} (target {data.get('rto_target_seconds')} s)",
             f"- RPO {data.get('rpo')} (target {data.get('rpo_target_seconds')} s){forced}",
             "", "| step | start | seconds | status | detail |", "| --- | ---: | ---: | --- | --- |"]
    for item in data.get("steps") or []:
        detail = str(item.get("detail") or "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {item['step']} | {item['started']:.3f} | {item['seconds']} | {item['status']} | {detail} |")
    for item in data.get("post_fork_export") or []:
        lines += ["", f"## Rows {item.get('host')} wrote after the fork ({item.get('since')}): {item.get('rows')}", ""]
        lines += [f"- {path}: {rows} rows" for path, rows in (item.get("files") or {}).items()]
    lines += ["", "## Loss, measured", ""]
    for service, item in (data.get("loss") or {}).items():
        if item:
            lines.append(f"- {service}: " + (f"{item['bytes']} bytes (old {item.get('old')}, new {item.get('new')})"
                                              if item.get("measured") else f"not measured: {item.get('why')}"))
    return "\n".join(lines) + "\n"


class FilterModule:
    """sapphire-ops DR filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_dr_plan": plan, "sapphire_dr_preflight": preflight, "sapphire_dr_loss": loss,
                "sapphire_dr_rpo_verdict": rpo_verdict, "sapphire_dr_step": step, "sapphire_dr_report": report,
                "sapphire_dr_markdown": markdown, "sapphire_dr_fence_targets": fence_targets,
                "sapphire_dr_measurements": measurements, "sapphire_dr_check_walk": check_walk,
                "sapphire_dr_manual_steps": manual_steps,
                "sapphire_lsn": parse_lsn}
