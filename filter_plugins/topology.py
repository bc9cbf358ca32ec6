"""The platform's topology, computed once: per region the clusters and the Redis / PostgreSQL primaries
and replicas with their addresses, the live region and the state's epoch.

The boilerplate play (playbooks/boilerplate.yml) applies the platform state's per-host role overrides
first, so the roles read here are the live ones, not the inventory's home layout. Every playbook and
role that needs "the primary Redis" or "the live region's clusters" asks this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError, AnsibleUndefinedVariable

SERVICES = {
    # service: (role variable, primary role value, port variable, default port)
    "redis": ("redis_replication_role", "primary", "redis_port", 6379),
    "postgres": ("postgres_replication_role", "primary", "postgres_port", 5432),
}


def _get(host: Mapping[str, Any], key: str, default: Any = None) -> Any:
    try:
        value = host.get(key, default)
    except AnsibleUndefinedVariable:  # a variable whose template cannot be resolved reads as absent
        return default
    return default if value is None else value


def _host_address(host: Mapping[str, Any]) -> str:
    """The address the controller reaches a host's servers at: ansible_host as the inventory sets it, else loopback
    for a local-connection host, else its inventory name."""
    local = _get(host, "ansible_connection", "ssh") == "local"
    return str(_get(host, "ansible_host") or ("127.0.0.1" if local else _get(host, "inventory_hostname", "")))


def _port(host: Mapping[str, Any], key: str, default: int) -> int:
    try:
        return int(_get(host, key, default))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"{key} of {_get(host, 'inventory_hostname', '')} is not a port number") from exc


def prometheus(host: Mapping[str, Any]) -> dict[str, Any]:
    """Filter: {host, region, url} of the Prometheus a monitoring host (host mode) serves, as the controller reaches
    it: http://<its address>:<prometheus_port, 9090>."""
    return {"host": str(_get(host, "inventory_hostname", "")), "region": str(_get(host, "sapphire_region", "primary")),
            "url": f"http://{_host_address(host)}:{_port(host, 'prometheus_port', 9090)}"}


def endpoint(host: Mapping[str, Any], service: str, overrides: Mapping[str, Any] | None = None,
             external: bool = False) -> dict[str, Any]:
    """{host, address, port, region, role, provider} of one data server as the controller and the clusters reach
    it; its role from the platform state's overrides when they name one, else from the inventory.

    A data host (host mode) is a machine the roles log in to: provider `host`. An external endpoint (a host of
    group <service>_endpoints, external mode) is a server reached over the network only: its address and port are
    <service>_external_host / _port and its provider <service>_external_provider (self_managed, rds, ...)."""
    role_key, _, port_key, default_port = SERVICES[service]
    name = str(_get(host, "inventory_hostname", ""))
    if external:
        address = _get(host, f"{service}_external_host") or name
        port_key = f"{service}_external_port"
        provider = str(_get(host, f"{service}_external_provider", "") or "unset")
    else:
        address = _get(host, f"{service}_address") or _host_address(host)
        provider = "host"
    port = _port(host, port_key, default_port)
    override = (overrides or {}).get(name) or {}
    found = {"host": name, "address": str(address), "port": port,
             "region": str(_get(host, "sapphire_region", "primary")),
             "role": str(override.get(role_key) or _get(host, role_key, "")), "provider": provider}
    if service == "postgres":
        # Fenced by a DR switch (stopped or made read-only) until a failback re-seeds it as a standby.
        fenced = override.get("postgres_fenced", _get(host, "postgres_fenced", False))
        found["fenced"] = fenced if isinstance(fenced, bool) else str(fenced).lower() in ("true", "yes", "1")
    return found


def _service(hosts: list[Mapping[str, Any]], service: str, live_region: str,
             overrides: Mapping[str, Any], external: bool = False) -> dict[str, Any]:
    _, primary_role, _, _ = SERVICES[service]
    servers = [endpoint(host, service, overrides, external) for host in hosts or []]
    primaries = [item for item in servers if item["role"] == primary_role]
    # The live region's primary first: it is the one that takes writes.
    primaries.sort(key=lambda item: (item["region"] != live_region, item["host"]))
    by_region: dict[str, dict[str, Any]] = {}
    for item in servers:
        region = by_region.setdefault(item["region"], {"primary": None, "replicas": []})
        if item["role"] == primary_role and region["primary"] is None:
            region["primary"] = item
        elif item["role"] != primary_role:
            region["replicas"].append(item)
    return {"primary": primaries[0] if primaries else None, "primaries": primaries,
            "replicas": [item for item in servers if item["role"] != primary_role],
            "servers": servers, "by_region": by_region}


def topology(clusters: list[Mapping[str, Any]], redis_hosts: list[Mapping[str, Any]],
             postgres_hosts: list[Mapping[str, Any]], state: Mapping[str, Any] | None = None,
             redis_mode: str = "host", postgres_mode: str = "host",
             endpoints: Mapping[str, list[Mapping[str, Any]]] | None = None,
             monitoring_hosts: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Filter: the topology from the hostvars of the clusters and data hosts and the platform state
    ({live_region, epoch, host_overrides}). A data service in host mode has the hosts of <service>_hosts as its
    servers; in external mode the hosts of group <service>_endpoints (endpoints: {redis: [...], postgres: [...]},
    hostvars), one per region; in kubernetes mode none. `prometheus` maps each region to the URL of the Prometheus
    of its first host in monitoring_hosts (what a canary or a blue-green switch is analysed with)."""
    state = state or {}
    live_region = str(state.get("live_region") or "primary")
    overrides = state.get("host_overrides") or {}
    endpoints = endpoints or {}

    def servers(service: str, hosts: list[Mapping[str, Any]], mode: str) -> dict[str, Any]:
        if mode == "external":
            return _service(list(endpoints.get(service) or []), service, live_region, overrides, external=True)
        return _service(hosts if mode == "host" else [], service, live_region, overrides)

    prometheus_urls: dict[str, str] = {}
    for found in map(prometheus, monitoring_hosts or []):
        prometheus_urls.setdefault(found["region"], found["url"])
    regions: dict[str, list[str]] = {}
    for cluster in clusters or []:
        regions.setdefault(str(_get(cluster, "sapphire_region", "primary")), []).append(
            str(_get(cluster, "inventory_hostname", "")))
    return {
        "live_region": live_region,
        "epoch": int(state.get("epoch") or 0),
        "clusters": {"by_region": regions, "live": regions.get(live_region, [])},
        "redis": servers("redis", redis_hosts, redis_mode),
        "postgres": servers("postgres", postgres_hosts, postgres_mode),
        "prometheus": prometheus_urls,
    }


def external_target(topo: Mapping[str, Any] | None, service: str,
                    promoted: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Filter: {address, port} of the external endpoint a cluster's Service `service` leads to: the server a DR switch
    just promoted (promoted: its plan's new endpoint), else the topology's primary among the endpoints declared per
    region (after a failover the platform state makes the promoted one the primary). {} when the service declares no
    endpoints: the single postgres_external_host / redis_external_host of the inventory is used as before."""
    chosen = promoted or ((topo or {}).get(service) or {}).get("primary")
    return {"address": str(chosen["address"]), "port": int(chosen["port"])} if chosen else {}


def service_checks(services: list[Mapping[str, Any]] | None, expected: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Filter: the agents' view against the live primaries: for each service of `expected` ({postgres: {address,
    port}, redis: ...}, sapphire_external_target), whether the cluster's Service of that name leads there (its
    sapphire.io/<service>-endpoint annotation, written with its EndpointSlice or ExternalName). A check per service,
    {name, status, msg, value, threshold}: fail when the Service is missing or leads elsewhere (after a failover the
    agents would write to the fenced server)."""
    found = {str((item.get("metadata") or {}).get("name")): item for item in services or []}
    checks = []
    for service, target in sorted(expected.items()):
        if not target:
            continue
        want = f"{target['address']}:{target['port']}"
        item = found.get(service)
        annotations = ((item or {}).get("metadata") or {}).get("annotations") or {}
        have = annotations.get(f"sapphire.io/{service}-endpoint")
        name = f"{service}_service_target"
        if item is None:
            checks.append({"name": name, "status": "fail", "value": None, "threshold": want,
                           "msg": f"no Service {service}: the agents cannot reach the live primary {want}"})
        elif have != want:
            checks.append({"name": name, "status": "fail", "value": have, "threshold": want,
                           "msg": f"Service {service} leads to {have or 'an unknown endpoint'}, not to the live "
                                  f"primary {want}: run deploy.yml (or finish the DR switch) to point it there"})
        else:
            checks.append({"name": name, "status": "ok", "value": have, "threshold": want,
                           "msg": f"Service {service} leads to the live primary {want}"})
    return checks


def halt_targets(topo: dict[str, Any]) -> list[dict[str, Any]]:
    """Filter: the Redis servers an emergency stop writes the halt flag to: the live primary first (it must
    take it), then every other server of the platform (best effort: a replica gets it by replication)."""
    redis = topo.get("redis") or {}
    first = [redis["primary"]] if redis.get("primary") else []
    return first + [item for item in redis.get("servers", []) if item not in first]


def state_cluster(host: Mapping[str, Any]) -> dict[str, str]:
    """Filter: {name, kubeconfig, context} of a cluster host, as sapphire_state reaches it."""
    return {"name": str(_get(host, "inventory_hostname", "")), "kubeconfig": str(_get(host, "k8s_kubeconfig", "")),
            "context": str(_get(host, "k8s_context", ""))}


def lock_holder(operation: str, user: str, controller: str, awx_job_id: Any) -> dict[str, str]:
    """Filter: who takes the operations lock: the playbook, the user, the controller, the AWX job (empty user and
    controller: the module fills in the user and host it runs as; it adds this run, <controller>:<pid>)."""
    return {"playbook": str(operation), "user": str(user or ""), "controller": str(controller or ""),
            "awx_job_id": str(awx_job_id or "-")}


EMPTY_STATE = {"epoch": 0, "live_region": "primary", "host_overrides": {}, "history": []}


def normalize_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The platform state with every key present (a cache written by an older toolkit used dr_* keys)."""
    state = dict(state or {})
    return {"epoch": int(state.get("epoch") or 0),
            "live_region": str(state.get("live_region") or state.get("dr_active_region") or "primary"),
            "host_overrides": dict(state.get("host_overrides") or state.get("dr_host_overrides") or {}),
            "history": list(state.get("history") or state.get("dr_history") or []),
            "updated": state.get("updated") or state.get("dr_updated") or "",
            "updated_by": state.get("updated_by") or ""}


def state_source(read: Mapping[str, Any] | None, cached: Mapping[str, Any] | None, store: str, writes: bool,
                 from_cache: bool, cache_file: str) -> dict[str, Any]:
    """Filter: where this run takes the platform state from: {state, source, refuse, warning}.

    store 'clusters' (every inventory with clusters): the highest epoch among the reachable clusters
    (sapphire_state read). When none answers, a run that writes refuses unless the operator said
    sapphire_state_from_cache=true; a read-only run reads the cache and says so. Never the home layout
    silently. store 'file': an inventory without clusters (a data-only drill) keeps it in the cache file.
    """
    if store not in ("clusters", "file"):
        raise AnsibleFilterError(f"sapphire_state_store must be clusters or file, not {store!r}")
    cache = normalize_state(cached)
    if store == "file":
        return {"state": cache, "source": f"file {cache_file}", "refuse": "", "warning": ""}
    read = dict(read or {})
    if int(read.get("reachable") or 0) > 0:
        return {"state": normalize_state(read.get("state")), "source": "clusters", "refuse": "", "warning": ""}
    errors = "; ".join(f"{item.get('name')}: {item.get('error') or 'unreachable'}"
                       for item in read.get("clusters") or []) or "no cluster in the inventory"
    written = cache["updated"] or "at an unknown time"
    described = (f"epoch {cache['epoch']}, live region {cache['live_region']}, written {written}"
                 if cached else "none: the cache file does not exist")
    if from_cache:
        return {"state": cache, "source": f"cache {cache_file}", "refuse": "",
                "warning": f"No cluster could be read ({errors}); acting on the cached state ({described}) "
                           "as sapphire_state_from_cache=true asked."}
    if writes:
        return {"state": cache, "source": "none", "warning": "",
                "refuse": (f"No cluster could be read to learn which region is live ({errors}). Nothing was written. "
                           "Fix the connection to a cluster, or, if you know the cached state on this controller is "
                           f"right ({cache_file}: {described}), run again with -e sapphire_state_from_cache=true.")}
    return {"state": cache, "source": f"cache {cache_file}", "refuse": "",
            "warning": f"No cluster could be read ({errors}); this read-only run uses the cached state ({described})."}


def postgres_slot(name: str, slot: str = "") -> str:
    """Filter: the physical replication slot of a standby: postgres_replication_slot, else its inventory name in
    lower case with everything but [a-z0-9_] made '_' (what PostgreSQL accepts as a slot name)."""
    return slot or "".join(char if char.isascii() and (char.isalnum() or char == "_") else "_" for char in name.lower())


def postgres_standbys(hosts: list[Mapping[str, Any]], primary: str,
                      default_mode: str = "async") -> list[dict[str, Any]]:
    """Filter: the standbys of `primary` among the postgres hosts' hostvars, in inventory order, each
    {host, slot, sync, fenced}. sync: its postgres_synchronous_commit_mode (default_mode when unset) is sync.
    fenced: a DR switch stopped it read-only (postgres_fenced, until dr-failback re-seeds it); the primary never
    waits for it and validate does not expect it to stream. Its slot is kept so that it can catch up later."""
    found = []
    for host in hosts:
        if _get(host, "postgres_replication_role") != "standby" or _get(host, "postgres_primary_host") != primary:
            continue
        name = str(_get(host, "inventory_hostname"))
        fenced = _get(host, "postgres_fenced", False)
        found.append({"host": name, "slot": postgres_slot(name, str(_get(host, "postgres_replication_slot", ""))),
                      "sync": str(_get(host, "postgres_synchronous_commit_mode", "") or default_mode) == "sync",
                      "fenced": fenced if isinstance(fenced, bool) else str(fenced).lower() in ("true", "yes", "1")})
    return found


class FilterModule:
    """sapphire-ops topology filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_topology": topology, "sapphire_halt_targets": halt_targets,
                "sapphire_external_target": external_target, "sapphire_service_checks": service_checks,
                "sapphire_state_source": state_source, "sapphire_state_normalize": normalize_state,
                "sapphire_state_cluster": state_cluster, "sapphire_lock_holder": lock_holder,
                "sapphire_postgres_standbys": postgres_standbys, "sapphire_postgres_slot": postgres_slot,
                "sapphire_prometheus": prometheus}
