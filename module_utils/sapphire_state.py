"""Platform state and the operations lock, kept in every cluster (issue 11; library/sapphire_state.py).

- The platform state is ConfigMap <state_name> (data key state.json) in every cluster of the inventory:
  epoch, live region, per-host overrides and the operation history. The highest epoch among the clusters
  that answer wins; a cluster that lacks the object or holds a lower epoch is stale. Writes are optimistic
  (replace carrying metadata.resourceVersion, create when absent): a 409 means another run wrote first.
- The operations lock is a coordination.k8s.io/v1 Lease <lease_name> in every cluster that answers,
  taken in the order of the cluster names. The API server enforces nothing about a Lease: acquire by
  create (409 AlreadyExists when held), renew and release by update with resourceVersion; a lease whose
  holder stopped renewing is taken over only when now > renewTime + leaseDurationSeconds + skew.
- A detached renewer keeps the leases fresh while the playbook runs and releases them when the watched
  process (the playbook) is gone.

The decisions are pure functions; the few calls to the API go through the small `Cluster` interface
(KubeCluster for a real cluster, fakes in tests/unit/test_state.py).

This file imports nothing from Ansible on purpose: the module copies its source to a temporary file and
starts it as the renewer (`python <copy> renew <config.json>`), a process that outlives the module and
the AnsiballZ payload the module was loaded from.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

STATE_KEY = "state.json"
HISTORY_KEEP = 50
LABELS = {"app.kubernetes.io/managed-by": "sapphire-ops", "app.kubernetes.io/part-of": "sapphire"}
BROKEN_ANNOTATION = "sapphire.io/broken"
RELEASED_ANNOTATION = "sapphire.io/released"
BREAK_HINT = "-e sapphire_lock_break=true -e sapphire_lock_break_reason='<why the holder is gone>'"
RENEWER_MAX_SECONDS = 6 * 3600
RENEWER_POLL_SECONDS = 1.0
RECORD_ATTEMPTS = 4  # the first try and up to 3 retries after a 409
ACTIONS = ("read", "write", "acquire", "release", "record")
NO_STATE_FIELDS = ("updated", "updated_by")


# ----------------------------------------------------------------------------------------- time
def format_time(timestamp: float) -> str:
    """A Kubernetes MicroTime: RFC 3339, UTC, microseconds, Z."""
    # timezone.utc, not datetime.UTC: the renewer runs under whatever Python the controller has.
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: UP017


TIME_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?$")


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (Time or MicroTime; no zone = UTC), None when unreadable."""
    if not isinstance(value, str):
        return None
    match = TIME_PATTERN.match(value.strip())
    if not match:
        return None
    date, clock, fraction, zone = match.groups()
    if not zone or zone in ("Z", "z"):
        offset = "+00:00"
    else:
        offset = zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    micro = ((fraction or "") + "000000")[:6]
    try:
        return datetime.fromisoformat(f"{date}T{clock}.{micro}{offset}").timestamp()
    except ValueError:
        return None


def seconds_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# ---------------------------------------------------------------------------------------- holder
def _holder_part(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return re.sub(r"\s+", "_", text) or "-"


def holder_identity(holder: dict[str, Any]) -> str:
    """The compact holderIdentity: `playbook=<p> user=<u> controller=<host> awx_job=<id or ->` (+ ` run=<id>`)."""
    parts = [f"playbook={_holder_part(holder.get('playbook'))}", f"user={_holder_part(holder.get('user'))}",
             f"controller={_holder_part(holder.get('controller'))}",
             f"awx_job={_holder_part(holder.get('awx_job_id'))}"]
    if holder.get("run_id") not in (None, ""):
        parts.append(f"run={_holder_part(holder.get('run_id'))}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------- state
def fresh_state() -> dict[str, Any]:
    """The state of a platform nobody has written yet: epoch 0, primary live."""
    return {"epoch": 0, "live_region": "primary", "host_overrides": {}, "history": [], "updated": None,
            "updated_by": None}


def state_problem(state: Any) -> str | None:
    """Why a state (from a ConfigMap or the `state` option) is not one, or None."""
    if not isinstance(state, dict):
        return f"must be a dict, got {type(state).__name__}"
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch must be a whole number >= 0 (got {epoch!r})"
    region = state.get("live_region")
    if not isinstance(region, str) or not region.strip():
        return f"live_region must be a region name such as primary or dr (got {region!r})"
    overrides = state.get("host_overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(value, dict) for value in overrides.values()):
        return "host_overrides must map host names to dicts of variables"
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(item, dict) for item in history):
        return "history must be a list of dicts"
    return None


def normalize_state(state: dict[str, Any]) -> dict[str, Any]:
    """A copy with every key of the state document (missing ones from fresh_state)."""
    result = fresh_state()
    result.update(copy.deepcopy(state))
    result["host_overrides"] = result.get("host_overrides") or {}
    result["history"] = result.get("history") or []
    return result


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The state without the fields every write changes (when and by whom)."""
    return {key: value for key, value in state.items() if key not in NO_STATE_FIELDS}


def parse_state_object(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The state a ConfigMap holds, or None and why it is unreadable."""
    raw = (obj.get("data") or {}).get(STATE_KEY)
    if raw is None:
        return None, f"the ConfigMap has no {STATE_KEY}"
    try:
        state = json.loads(raw)
    except ValueError as exc:
        return None, f"{STATE_KEY} is not JSON ({exc})"
    problem = state_problem(state)
    if problem:
        return None, f"{STATE_KEY}: {problem}"
    return normalize_state(state), None


def stamp_entry(entry: dict[str, Any], now: float, by: str) -> dict[str, Any]:
    """A history entry with an id (so a retried write never appends it twice), a time and an author."""
    stamped = copy.deepcopy(entry)
    stamped.setdefault("id", uuid.uuid4().hex)
    stamped.setdefault("ts", format_time(now))
    stamped.setdefault("by", by)
    return stamped


def append_history(history: list[dict[str, Any]], entry: dict[str, Any] | None,
                   keep: int = HISTORY_KEEP) -> list[dict[str, Any]]:
    """The history with entry appended (not when an entry of the same id is there), the newest `keep` kept."""
    items = list(history)
    if entry is not None:
        entry_id = entry.get("id")
        if not (entry_id and any(item.get("id") == entry_id for item in items)):
            items.append(entry)
    return items[-keep:] if keep > 0 else []


@dataclass
class ClusterState:
    """What one cluster answered when its state ConfigMap was read."""

    name: str
    reachable: bool
    state: dict[str, Any] | None = None  # the parsed state; None when absent or unreadable
    obj: dict[str, Any] | None = None  # the ConfigMap (for its resourceVersion); None when absent
    error: str | None = None

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "reachable": self.reachable,
                "epoch": self.state["epoch"] if self.state is not None else None, "error": self.error}


@dataclass
class Merge:
    """The winning state among the clusters that answered."""

    state: dict[str, Any]
    source: str | None  # the cluster it came from; None for a fresh platform or when none answered
    found: bool
    reachable: list[str]
    stale: list[str]
    unreadable: list[str]


def merge_states(reads: list[ClusterState]) -> Merge:
    """Highest epoch wins (then the latest `updated`, then the first cluster listed); the others are stale."""
    reachable = [item for item in reads if item.reachable]
    holding = [(index, item.name, item.state) for index, item in enumerate(reads)
               if item.reachable and item.state is not None]

    def rank(candidate: tuple[int, str, dict[str, Any]]) -> tuple[int, float, int]:
        index, _name, state = candidate
        return state["epoch"], parse_time(state.get("updated")) or 0.0, -index

    if holding:
        _index, winner, best = max(holding, key=rank)
        state: dict[str, Any] = copy.deepcopy(best)
        source: str | None = winner
    else:
        state, source = fresh_state(), None
    stale = [item.name for item in reachable if item.state is None or item.state["epoch"] < state["epoch"]]
    unreadable = [item.name for item in reachable if item.obj is not None and item.state is None]
    return Merge(state=state, source=source, found=bool(holding), reachable=[item.name for item in reachable],
                 stale=stale, unreadable=unreadable)


def state_object(name: str, namespace: str, state: dict[str, Any],
                 existing: dict[str, Any] | None) -> dict[str, Any]:
    """The ConfigMap to create (existing None) or to replace (keeps its metadata and resourceVersion)."""
    if existing is None:
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name, "namespace": namespace}}
    else:
        obj = copy.deepcopy(existing)
        obj["metadata"].pop("managedFields", None)
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "ConfigMap")
    obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), **LABELS}
    obj["data"] = {**(obj.get("data") or {}), STATE_KEY: json.dumps(state, indent=1, sort_keys=True)}
    return obj


def namespace_object(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(LABELS)}}


# ----------------------------------------------------------------------------------------- leases
@dataclass
class LeaseDecision:
    """What acquire does with a lease: create, renew (ours), free (holder cleared), stale, break, held."""

    action: str
    holder: str | None = None
    acquire_time: str | None = None
    renew_time: str | None = None
    duration: int | None = None
    stale_in: float | None = None  # seconds until a held lease may be taken over

    @property
    def takes(self) -> bool:
        """Whether acquiring changes the holder (so a failed acquire must give it back)."""
        return self.action in ("create", "free", "stale", "break")


def lease_holder(lease: dict[str, Any] | None) -> str:
    if not lease:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "").strip()


_RUN = re.compile(r"(?:^|\s)run=(?P<controller>[^\s:]+):(?P<pid>[0-9]+)(?:\s|$)")


def ended_run(holder: str, controller: str, alive: Callable[[int], bool]) -> bool:
    """Whether holder names a run (run=<controller>:<pid>) of this controller whose process has ended: its
    renewer releases the lease within a second of the end, this tells the next run so without waiting."""
    match = _RUN.search(holder or "")
    return bool(match) and match.group("controller") == controller and not alive(int(match.group("pid")))


def decide_lease(lease: dict[str, Any] | None, ours: str, now: float, skew: int, break_lock: bool,
                 default_duration: int, ended: Callable[[str], bool] | None = None) -> LeaseDecision:
    """The acquire decision for one cluster's lease (None when it does not exist). ended(holder): whether the
    holder's run is known to have ended (a run of this controller whose process is gone)."""
    if lease is None:
        return LeaseDecision("create")
    spec = lease.get("spec") or {}
    holder = lease_holder(lease)
    acquire_time, renew_time = spec.get("acquireTime"), spec.get("renewTime")
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0:
        duration = default_duration
    decision = LeaseDecision("held", holder or None, acquire_time, renew_time, duration)
    if not holder:
        decision.action = "free"
        return decision
    if holder == ours:
        decision.action = "renew"
        return decision
    if ended is not None and ended(holder):
        decision.action, decision.stale_in = "stale", 0.0
        return decision
    renewed = (parse_time(renew_time) or parse_time(acquire_time)
               or parse_time((lease.get("metadata") or {}).get("creationTimestamp")))
    if renewed is None or now > renewed + duration + skew:
        decision.action, decision.stale_in = "stale", 0.0
        return decision
    decision.stale_in = renewed + duration + skew - now
    if break_lock:
        decision.action = "break"
    return decision


def lease_object(name: str, namespace: str, existing: dict[str, Any] | None, ours: str, now: float,
                 duration: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The lease held by `ours`: created, renewed (acquireTime kept) or taken from another holder."""
    if existing is None:
        lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                 "metadata": {"name": name, "namespace": namespace}, "spec": {}}
    else:
        lease = copy.deepcopy(existing)
        lease["metadata"].pop("managedFields", None)
    lease.setdefault("apiVersion", "coordination.k8s.io/v1")
    lease.setdefault("kind", "Lease")
    metadata = lease["metadata"]
    metadata["labels"] = {**(metadata.get("labels") or {}), **LABELS}
    if annotations:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    spec = lease.setdefault("spec", {})
    previous = lease_holder(existing)
    stamp = format_time(now)
    if previous != ours or not spec.get("acquireTime"):
        spec["acquireTime"] = stamp
        if existing is not None and previous and previous != ours:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    spec.setdefault("leaseTransitions", 0)
    spec["holderIdentity"] = ours
    spec["leaseDurationSeconds"] = int(duration)
    spec["renewTime"] = stamp
    return lease


def released_lease(existing: dict[str, Any], now: float) -> dict[str, Any]:
    """The lease without a holder (free), noting who released it and when."""
    lease = copy.deepcopy(existing)
    lease["metadata"].pop("managedFields", None)
    previous = lease_holder(existing)
    lease["metadata"]["annotations"] = {**(lease["metadata"].get("annotations") or {}),
                                        RELEASED_ANNOTATION: f"{previous} at {format_time(now)}"}
    spec = lease.setdefault("spec", {})
    spec.pop("holderIdentity", None)
    spec["renewTime"] = format_time(now)
    return lease


def broken_note(ours: str, now: float, reason: str, previous: LeaseDecision) -> str:
    return (f"{ours} at {format_time(now)}: {reason}, previous holder {previous.holder} "
            f"(since {previous.acquire_time or 'unknown'}, last renewed {previous.renew_time or 'unknown'})")


def held_message(cluster: str, decision: LeaseDecision, now: float, lease_name: str, namespace: str) -> str:
    since = decision.acquire_time or "an unknown time"
    renewed = parse_time(decision.renew_time)
    renewed_text = f", last renewed {seconds_text(now - renewed)} ago" if renewed is not None else ""
    return (f"the operations lock (Lease {namespace}/{lease_name} in cluster {cluster}) is held by "
            f"'{decision.holder}' since {since}{renewed_text}; it goes stale in "
            f"{seconds_text(decision.stale_in or 0)} if that run stops renewing it (lease "
            f"{decision.duration} s + skew). Wait for that run to finish and re-run, or, only if that run is gone, "
            f"break the lock: {BREAK_HINT}")


# ----------------------------------------------------------------------------------------- parameters
def param_problems(params: dict[str, Any]) -> list[str]:
    """Parameter errors Ansible's argument spec cannot express (each names the option)."""
    problems: list[str] = []
    clusters = params.get("clusters") or []
    if not clusters:
        problems.append("clusters must list at least one cluster ({name, kubeconfig, context})")
    names = [str(item.get("name") or "").strip() for item in clusters]
    if any(not name for name in names):
        problems.append("clusters: every entry needs a name")
    duplicates = sorted({name for name in names if name and names.count(name) > 1})
    if duplicates:
        problems.append(f"clusters: duplicate names {', '.join(duplicates)}")
    for option in ("namespace", "lease_name", "state_name"):
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", str(params.get(option) or "")):
            problems.append(f"{option} must be a Kubernetes object name (got {params.get(option)!r})")
    for option, low in (("lease_duration_seconds", 1), ("request_timeout", 1), ("skew_seconds", 0)):
        value = params.get(option)
        if value is not None and value < low:
            problems.append(f"{option} must be >= {low} (got {value})")
    action = params.get("action")
    if action == "write":
        problem = state_problem(params.get("state"))
        if problem:
            problems.append(f"state: {problem}")
    if params.get("break_lock") and not str(params.get("break_reason") or "").strip():
        problems.append("break_reason must say why the lock is broken when break_lock is true")
    watch_pid = params.get("watch_pid")
    if watch_pid is not None:
        if action != "acquire":
            problems.append("watch_pid is only for action=acquire")
        elif watch_pid < 0 or process_start(watch_pid) is None:
            problems.append(f"watch_pid {watch_pid} is not a running process")
    holder = params.get("holder")
    if holder is not None and not str(holder.get("playbook") or "").strip():
        problems.append("holder.playbook must name the playbook")
    return problems


# ----------------------------------------------------------------------------------------- API access
class ApiError(Exception):
    """An API call that failed: status is the HTTP status, None when the cluster did not answer."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class Cluster(Protocol):
    """The calls the state and the lock need, in one namespace of one cluster. kind: configmap | lease."""

    name: str

    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...  # None when absent (404)

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def replace(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def create_namespace(self) -> None: ...


def _compact(text: Any, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


class UnreachableCluster:
    """A cluster whose client could not even be built (unreadable kubeconfig, unknown context)."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def _fail(self, *_args: Any) -> Any:
        raise ApiError(None, self.error)

    get = create = replace = _fail

    def create_namespace(self) -> None:
        self._fail()


class KubeCluster:
    """Cluster over the kubernetes Python client, JSON in and out (no model conversion)."""

    def __init__(self, name: str, api_client: Any, namespace: str, timeout: float) -> None:
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = method(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
        except ApiException as exc:
            detail = exc.reason
            try:
                detail = json.loads(exc.body).get("message") or detail
            except (TypeError, ValueError, AttributeError):
                pass
            raise ApiError(exc.status, f"{exc.status} {exc.reason}: {_compact(detail)}") from None
        except Exception as exc:  # no answer: refused, timed out, TLS
            raise ApiError(None, f"cannot reach the API server ({type(exc).__name__}: {_compact(exc)})") from None
        return json.loads(response.data or b"{}")

    def _methods(self, kind: str) -> tuple[Any, Any, Any]:
        if kind == "configmap":
            return (self.core.read_namespaced_config_map, self.core.create_namespaced_config_map,
                    self.core.replace_namespaced_config_map)
        if kind == "lease":
            return (self.coordination.read_namespaced_lease, self.coordination.create_namespaced_lease,
                    self.coordination.replace_namespaced_lease)
        raise ValueError(f"unknown kind {kind}")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(self._methods(kind)[0], name, self.namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._methods(kind)[1], self.namespace, body)

    def replace(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self._methods(kind)[2], name, self.namespace, body)

    def create_namespace(self) -> None:
        try:
            self._call(self.core.create_namespace, namespace_object(self.namespace))
        except ApiError as exc:
            if exc.status != 409:
                raise


def connect(spec: dict[str, Any], namespace: str, timeout: float) -> KubeCluster | UnreachableCluster:
    """A client for one cluster entry {name, kubeconfig, context}; empty kubeconfig/context = the defaults."""
    name = str(spec["name"])
    try:
        from kubernetes import client, config

        configuration = type.__call__(client.Configuration)
        configuration.retries = 1  # one retry on a refused connection; a slow cluster costs one timeout
        api_client = config.new_client_from_config(config_file=spec.get("kubeconfig") or None,
                                                   context=spec.get("context") or None, persist_config=False,
                                                   client_configuration=configuration)
        return KubeCluster(name, api_client, namespace, timeout)
    except Exception as exc:  # unreadable kubeconfig, unknown context: this cluster cannot be reached
        return UnreachableCluster(name, f"cannot use kubeconfig {spec.get('kubeconfig') or '(default)'} "
                                        f"context {spec.get('context') or '(current)'}: "
                                        f"{type(exc).__name__}: {_compact(exc)}")


def create_object(cluster: Cluster, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create, creating the namespace first when the API says it is missing."""
    try:
        return cluster.create(kind, body)
    except ApiError as exc:
        if exc.status != 404:
            raise
    cluster.create_namespace()
    return cluster.create(kind, body)


# ----------------------------------------------------------------------------------------- actions
class StateFailure(Exception):
    """The action failed; msg is what the operator reads, result what the module returns with it."""

    def __init__(self, msg: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


def new_result() -> dict[str, Any]:
    """Every documented return key, so consumers never meet a missing one."""
    return {"changed": False, "state": None, "clusters": [], "reachable": 0, "stale": [], "found": False,
            "unreadable": [], "source": None, "written": [], "holder": None, "acquired": [], "took_over": None,
            "held": None, "released": [], "renewer_pid": None, "renewer_log": None, "watched_pid": None,
            "warnings": []}


def read_states(clusters: list[Cluster], state_name: str) -> list[ClusterState]:
    """Every cluster's state ConfigMap, read side by side (an unreachable one costs one timeout, once)."""

    def read(cluster: Cluster) -> ClusterState:
        try:
            obj = cluster.get("configmap", state_name)
        except ApiError as exc:
            return ClusterState(cluster.name, False, error=exc.message)
        if obj is None:
            return ClusterState(cluster.name, True)
        state, problem = parse_state_object(obj)
        return ClusterState(cluster.name, True, state=state, obj=obj, error=problem)

    if len(clusters) <= 1:
        return [read(cluster) for cluster in clusters]
    with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
        return list(pool.map(read, clusters))


def _state_report(result: dict[str, Any], reads: list[ClusterState], merge: Merge) -> None:
    # no cluster answered: nothing is known, which must never read as a fresh platform (the home layout)
    result.update(state=merge.state if merge.reachable else None, clusters=[item.report() for item in reads],
                  reachable=len(merge.reachable),
                  stale=merge.stale, found=merge.found, unreadable=merge.unreadable, source=merge.source)
    for name in merge.unreadable:
        error = next(item.error for item in reads if item.name == name)
        result["warnings"].append(f"the platform state in cluster {name} is unreadable ({error}); it counts as "
                                  "absent and the next write replaces it")


def read_action(clusters: list[Cluster], state_name: str) -> dict[str, Any]:
    result = new_result()
    reads = read_states(clusters, state_name)
    _state_report(result, reads, merge_states(reads))
    unreachable = [item for item in reads if not item.reachable]
    if unreachable:
        result["warnings"].append("platform state not read from " + "; ".join(
            f"{item.name} ({item.error})" for item in unreachable))
    return result


def _unreachable_text(reads: list[ClusterState]) -> str:
    return "; ".join(f"{item.name}: {item.error}" for item in reads if not item.reachable)


def write_state(cluster: Cluster, item: ClusterState, state_name: str, namespace: str,
                state: dict[str, Any]) -> None:
    """Create the state ConfigMap or replace the one item read (its resourceVersion); ApiError 409 = lost race."""
    body = state_object(state_name, namespace, state, item.obj)
    if item.obj is None:
        create_object(cluster, "configmap", body)
    else:
        cluster.replace("configmap", state_name, body)


def write_action(clusters: list[Cluster], state_name: str, namespace: str, new_state: dict[str, Any],
                 history_entry: dict[str, Any] | None, by: str, now: float, check_mode: bool) -> dict[str, Any]:
    """Write new_state to every reachable cluster (refusing a lower epoch); result with `diff`."""
    result = new_result()
    reads = read_states(clusters, state_name)
    merge = merge_states(reads)
    _state_report(result, reads, merge)
    if not merge.reachable:
        raise StateFailure("no cluster could be reached to write the platform state: " + _unreachable_text(reads),
                           result)
    if new_state["epoch"] < merge.state["epoch"]:
        raise StateFailure(
            f"refusing to write the platform state with epoch {new_state['epoch']}: cluster {merge.source} holds "
            f"epoch {merge.state['epoch']} (live region {merge.state['live_region']}); a newer state was written "
            "after this run read it - read the state again and re-run", result)
    target = normalize_state(new_state)
    if "history" not in new_state:
        target["history"] = copy.deepcopy(merge.state["history"])
    entry = stamp_entry(history_entry, now, by) if history_entry is not None else None
    target["history"] = append_history(target["history"], entry)
    todo = [item for item in reads if item.reachable
            and (item.state is None or comparable(item.state) != comparable(target))]
    if todo:
        target["updated"], target["updated_by"] = format_time(now), by
    else:
        target["updated"], target["updated_by"] = merge.state.get("updated"), merge.state.get("updated_by")
    result["diff"] = {"before": merge.state, "after": target,
                      "before_header": f"{state_name} ({merge.source or 'none'}, epoch {merge.state['epoch']})",
                      "after_header": f"{state_name} (epoch {target['epoch']})"}
    result.update(changed=bool(todo), written=[item.name for item in todo], state=target)
    if check_mode or not todo:
        _warn_unreachable(result, reads, "the platform state was not written to")
        return result
    by_name = {cluster.name: cluster for cluster in clusters}
    written: list[str] = []
    for item in todo:
        try:
            write_state(by_name[item.name], item, state_name, namespace, target)
        except ApiError as exc:
            result.update(written=written, changed=bool(written))
            if exc.status == 409:
                raise StateFailure(
                    f"another run wrote the platform state in cluster {item.name} concurrently (409 Conflict); "
                    f"written before that: {', '.join(written) or 'nothing'}. Re-run to read the new state",
                    result) from None
            raise StateFailure(f"could not write the platform state in cluster {item.name}: {exc.message}; "
                               f"written before that: {', '.join(written) or 'nothing'}. Re-run", result) from None
        written.append(item.name)
    result["written"] = written
    _warn_unreachable(result, reads, "the platform state was not written to")
    return result


def _warn_unreachable(result: dict[str, Any], reads: list[ClusterState], what: str) -> None:
    if any(not item.reachable for item in reads):
        result["warnings"].append(f"{what} unreachable clusters: {_unreachable_text(reads)}")


def record_action(clusters: list[Cluster], state_name: str, namespace: str, history_entry: dict[str, Any],
                  by: str, now: Callable[[], float], check_mode: bool,
                  attempts: int = RECORD_ATTEMPTS) -> dict[str, Any]:
    """Append history_entry to the winning state (epoch and live region unchanged) in every reachable cluster."""
    entry = stamp_entry(history_entry, now(), by)
    by_name = {cluster.name: cluster for cluster in clusters}
    written: list[str] = []  # over all attempts: a retry after a partial write finds the entry there already
    last_conflict = ""
    result = new_result()
    for _attempt in range(attempts):
        result = new_result()
        reads = read_states(clusters, state_name)
        merge = merge_states(reads)
        _state_report(result, reads, merge)
        if not merge.reachable:
            result.update(written=written, changed=bool(written))
            raise StateFailure("no cluster could be reached to record the operation in the platform state: "
                               + _unreachable_text(reads), result)
        target = copy.deepcopy(merge.state)
        target["history"] = append_history(target["history"], entry)
        todo = [item for item in reads if item.reachable
                and (item.state is None or comparable(item.state) != comparable(target))]
        if todo:
            target["updated"], target["updated_by"] = format_time(now()), by
        result["state"] = target
        if check_mode:
            result.update(changed=bool(todo), written=[item.name for item in todo])
            _warn_unreachable(result, reads, "the operation was not recorded in")
            return result
        conflict = None
        for item in todo:
            try:
                write_state(by_name[item.name], item, state_name, namespace, target)
            except ApiError as exc:
                if exc.status != 409:
                    result.update(written=written, changed=bool(written))
                    raise StateFailure(f"could not record the operation in cluster {item.name}: {exc.message}; "
                                       f"recorded in: {', '.join(written) or 'none'}", result) from None
                conflict = f"cluster {item.name}: {exc.message}"
                break
            if item.name not in written:
                written.append(item.name)
        result.update(written=written, changed=bool(written))
        if conflict is None:
            _warn_unreachable(result, reads, "the operation was not recorded in")
            return result
        last_conflict = conflict
    raise StateFailure(f"the platform state kept changing while recording the operation ({attempts} attempts, "
                       f"last conflict in {last_conflict}); re-run", result)


def release_one(cluster: Cluster, lease_name: str, ours: str, now: Callable[[], float]) -> tuple[str, str]:
    """Clear our holder from one lease: ('released' | 'absent' | 'free' | 'other' | 'error', detail)."""
    for _attempt in range(3):
        try:
            lease = cluster.get("lease", lease_name)
        except ApiError as exc:
            return "error", exc.message
        holder = lease_holder(lease)
        if lease is None:
            return "absent", ""
        if not holder:
            return "free", ""
        if holder != ours:
            return "other", holder
        try:
            cluster.replace("lease", lease_name, released_lease(lease, now()))
        except ApiError as exc:
            if exc.status == 409:
                continue
            return "error", exc.message
        return "released", ""
    return "error", "the lease kept changing (409 Conflict three times)"


def release_action(clusters: list[Cluster], lease_name: str, ours: str, now: Callable[[], float],
                   check_mode: bool) -> dict[str, Any]:
    result = new_result()
    result["holder"] = ours
    for cluster in sorted(clusters, key=lambda item: item.name):
        report: dict[str, Any] = {"name": cluster.name, "reachable": True, "epoch": None, "error": None}
        if check_mode:
            try:
                lease = cluster.get("lease", lease_name)
                outcome = "released" if lease_holder(lease) == ours else "other" if lease_holder(lease) else "free"
                detail = lease_holder(lease)
            except ApiError as exc:
                outcome, detail = "error", exc.message
        else:
            outcome, detail = release_one(cluster, lease_name, ours, now)
        if outcome == "released":
            result["released"].append(cluster.name)
        elif outcome == "other":
            result["warnings"].append(f"the operations lock in cluster {cluster.name} is held by '{detail}', "
                                      "not by this run: left alone")
        elif outcome == "error":
            report.update(reachable=False, error=detail)
            result["warnings"].append(f"could not release the operations lock in cluster {cluster.name}: {detail}; "
                                      "it goes stale by itself")
        result["clusters"].append(report)
    result["reachable"] = sum(1 for item in result["clusters"] if item["reachable"])
    result["changed"] = bool(result["released"])
    return result


def _took_over(took: dict[str, Any] | None, cluster: str, decision: LeaseDecision) -> dict[str, Any]:
    if took is None:
        took = {"holder": decision.holder, "acquire_time": decision.acquire_time, "renew_time": decision.renew_time,
                "how": "broken" if decision.action == "break" else "stale", "clusters": []}
    took["clusters"].append(cluster)
    if decision.action == "break":
        took["how"] = "broken"
    return took


def acquire_action(clusters: list[Cluster], lease_name: str, namespace: str, ours: str,
                   now: Callable[[], float], duration: int, skew: int, break_lock: bool, break_reason: str | None,
                   check_mode: bool, ended: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Take the operations lock in every reachable cluster, in name order; StateFailure when it is held."""
    result = new_result()
    result["holder"] = ours
    taken: list[Cluster] = []  # leases this call took (given back if a later cluster refuses)

    def give_back() -> None:
        for cluster in taken:
            outcome, detail = release_one(cluster, lease_name, ours, now)
            if outcome not in ("released", "absent", "free"):
                result["warnings"].append(f"could not give back the operations lock in cluster {cluster.name} "
                                          f"({outcome} {detail}); it goes stale by itself")
        result["acquired"] = []

    def fail(msg: str) -> StateFailure:
        give_back()
        result["changed"] = False
        return StateFailure(msg, result)

    for cluster in sorted(clusters, key=lambda item: item.name):
        report: dict[str, Any] = {"name": cluster.name, "reachable": True, "epoch": None, "error": None}
        result["clusters"].append(report)
        try:
            lease = cluster.get("lease", lease_name)
        except ApiError as exc:
            report.update(reachable=False, error=exc.message)
            continue
        for attempt in range(2):  # a lost race (409) reads the lease again and decides once more
            moment = now()
            decision = decide_lease(lease, ours, moment, skew, break_lock, duration, ended)
            if decision.action == "held":
                result["held"] = {"cluster": cluster.name, "holder": decision.holder,
                                  "acquire_time": decision.acquire_time, "renew_time": decision.renew_time,
                                  "stale_in": round(decision.stale_in or 0)}
                message = held_message(cluster.name, decision, moment, lease_name, namespace)
                if check_mode:
                    result["warnings"].append(message)
                    break
                raise fail(message)
            if check_mode:
                if decision.action in ("stale", "break"):
                    result["took_over"] = _took_over(result["took_over"], cluster.name, decision)
                result["acquired"].append(cluster.name)
                break
            annotations = ({BROKEN_ANNOTATION: broken_note(ours, moment, str(break_reason), decision)}
                           if decision.action == "break" else None)
            body = lease_object(lease_name, namespace, lease, ours, moment, duration, annotations)
            try:
                if decision.action == "create":
                    create_object(cluster, "lease", body)
                else:
                    cluster.replace("lease", lease_name, body)
            except ApiError as exc:
                if exc.status == 409 and attempt == 0:
                    try:
                        lease = cluster.get("lease", lease_name)
                    except ApiError as again:
                        raise fail(f"could not take the operations lock in cluster {cluster.name}: "
                                   f"{again.message}") from None
                    continue
                if decision.takes:
                    taken.append(cluster)  # the write may have happened before the connection broke
                raise fail(f"could not take the operations lock in cluster {cluster.name}: {exc.message}; "
                           "another run may be taking it right now - re-run") from None
            if decision.takes:
                taken.append(cluster)
            if decision.action in ("stale", "break"):
                result["took_over"] = _took_over(result["took_over"], cluster.name, decision)
            result["acquired"].append(cluster.name)
            break
    result["reachable"] = sum(1 for item in result["clusters"] if item["reachable"])
    if not result["reachable"]:
        raise StateFailure("no cluster could be reached to take the operations lock: " + "; ".join(
            f"{item['name']}: {item['error']}" for item in result["clusters"]), result)
    if result["held"] is not None:  # check mode: it would not be acquired
        result["acquired"] = []
    unreachable = [item for item in result["clusters"] if not item["reachable"]]
    if unreachable:
        result["warnings"].append("the operations lock could not be taken in unreachable clusters (another "
                                  "controller that reaches only those could take it there): " + "; ".join(
                                      f"{item['name']}: {item['error']}" for item in unreachable))
    result["changed"] = bool(result["acquired"])
    return result


# ----------------------------------------------------------------------------------------- renewer
def process_start(pid: int) -> str | None:
    """The start time of a live process (to tell a reused pid), None when it is gone or a zombie."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        if os.path.isdir("/proc"):
            return None
        try:  # no procfs: existence only
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else "unknown"


def _proc_parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().rstrip(b"\0").split(b"\0")]
    except OSError:
        return []


def playbook_process(pid: int, parent: Callable[[int], int] = _proc_parent,
                     cmdline: Callable[[int], list[str]] = _proc_cmdline) -> int | None:
    """The ansible-playbook process running pid (a module): of the nearest ansible-playbook ancestors (the
    task's worker is a fork of the main process, with its command line), the outermost one in a row."""
    found = None
    current = parent(pid)
    seen: set[int] = set()
    while current > 1 and current not in seen:
        seen.add(current)
        is_playbook = any(os.path.basename(arg) == "ansible-playbook" for arg in cmdline(current)[:2])
        if is_playbook:
            found = current
        elif found is not None:
            break
        current = parent(current)
    return found


def watched_alive(pid: int, start: str | None) -> bool:
    """Whether the watched process still runs (the same process: a reused pid has another start time)."""
    current = process_start(pid)
    if current is None:
        return False
    return start in (None, "unknown") or current == start


def renew_interval(duration: int) -> float:
    return float(max(5.0, duration / 4.0))


def renew_one(cluster: Cluster, lease_name: str, ours: str, now: float, duration: int) -> tuple[str, str]:
    """Renew one lease: ('renewed' | 'lost' | 'error', detail). Lost = not ours any more, or a conflict."""
    try:
        lease = cluster.get("lease", lease_name)
    except ApiError as exc:
        return "error", exc.message
    holder = lease_holder(lease)
    if lease is None or holder != ours:
        return "lost", f"holder is now '{holder or '(none)'}'" if lease is not None else "the lease is gone"
    spec = lease.get("spec") or {}
    try:
        cluster.replace("lease", lease_name, lease_object(lease_name, str(lease["metadata"].get("namespace")),
                                                          lease, ours, now, int(spec.get("leaseDurationSeconds")
                                                                                or duration)))
    except ApiError as exc:
        if exc.status == 409:
            return "lost", f"another writer changed the lease ({exc.message})"
        return "error", exc.message
    return "renewed", ""


def run_renewer(config: dict[str, Any], clusters: list[Cluster], alive: Callable[[], bool],
                wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print) -> str:
    """Renew our leases every interval until the watched process is gone (then release them); the reason it ended."""
    ours, lease_name = config["holder"], config["lease_name"]
    duration = int(config["lease_duration_seconds"])
    interval = float(config.get("interval") or renew_interval(duration))
    limit = float(config.get("max_seconds") or RENEWER_MAX_SECONDS)
    active = {cluster.name: cluster for cluster in clusters}
    start = monotonic()
    next_renew = start + interval
    while True:
        if not alive():
            released = []
            for name, cluster in sorted(active.items()):
                outcome, detail = release_one(cluster, lease_name, ours, wall)
                log(f"release {name}: {outcome} {detail}".rstrip())
                if outcome == "released":
                    released.append(name)
            return f"watched process {config.get('watch_pid')} ended; released in {', '.join(released) or 'none'}"
        current = monotonic()
        if current - start >= limit:
            return f"stopped after {seconds_text(limit)} (the limit); the leases go stale by themselves"
        if current >= next_renew:
            for name, cluster in sorted(active.items()):
                outcome, detail = renew_one(cluster, lease_name, ours, wall(), duration)
                if outcome != "renewed":
                    log(f"renew {name}: {outcome} {detail}")
                if outcome == "lost":
                    del active[name]
            next_renew = current + interval
            if not active:
                return "no lease left to renew (released, taken over or changed by someone else)"
        sleep(min(float(config.get("poll") or RENEWER_POLL_SECONDS), max(0.0, next_renew - monotonic())) or 0.01)


def renewer_config(cluster_specs: Iterable[dict[str, Any]], namespace: str, lease_name: str, ours: str,
                   duration: int, request_timeout: int, watch_pid: int) -> dict[str, Any]:
    return {"clusters": [{"name": item["name"], "kubeconfig": item.get("kubeconfig") or "",
                          "context": item.get("context") or ""} for item in cluster_specs],
            "namespace": namespace, "lease_name": lease_name, "holder": ours, "lease_duration_seconds": duration,
            "request_timeout": request_timeout, "watch_pid": watch_pid, "watch_start": process_start(watch_pid),
            "interval": renew_interval(duration), "max_seconds": RENEWER_MAX_SECONDS}


def spawn_renewer(config: dict[str, Any], source: str, python: str | None = None) -> tuple[int, str]:
    """Start `source` (this file) detached as the renewer in a new session; its pid and its log file."""
    directory = tempfile.mkdtemp(prefix="sapphire-lease-renewer-")
    script = os.path.join(directory, "renewer.py")
    config_path = os.path.join(directory, "config.json")
    log_path = os.path.join(directory, "renewer.log")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(source)
    with open(os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([python or sys.executable, script, "renew", config_path],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=directory,
                                close_fds=True, start_new_session=True)
    return proc.pid, log_path


def renewer_main(argv: list[str]) -> int:
    """`renew <config.json>`: the detached renewer. Removes its files when it ends normally."""
    if len(argv) != 2 or argv[0] != "renew":
        print("usage: sapphire_state.py renew <config.json>", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    directory = os.path.dirname(os.path.abspath(argv[1]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sapphire lease renewer: %(message)s")
    log = logging.getLogger("sapphire-lease-renewer").info
    pid, start = int(config["watch_pid"]), config.get("watch_start")
    clusters = [connect(item, config["namespace"], float(config["request_timeout"])) for item in config["clusters"]]
    log(f"renewing {config['lease_name']} for '{config['holder']}' in {', '.join(c.name for c in clusters)} "
        f"every {config['interval']} s while pid {pid} runs")
    reason = run_renewer(config, clusters, lambda: watched_alive(pid, start), log=log)
    log(reason)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(renewer_main(sys.argv[1:]))
