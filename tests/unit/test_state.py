"""Platform state and the operations lock (module_utils/sapphire_state.py, library/sapphire_state.py), no cluster.

The decisions are pure functions; the actions run against FakeCluster, which behaves like the API server
for the calls the module makes: create answers 409 when the object exists and 404 when the namespace is
missing, replace answers 409 when the resourceVersion is not the current one.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.sapphire_state import (
    BROKEN_ANNOTATION,
    HISTORY_KEEP,
    ApiError,
    ClusterState,
    StateFailure,
    acquire_action,
    append_history,
    decide_lease,
    format_time,
    holder_identity,
    lease_object,
    merge_states,
    param_problems,
    parse_time,
    playbook_process,
    read_action,
    record_action,
    release_action,
    renew_interval,
    run_renewer,
    stamp_entry,
    state_problem,
    write_action,
)
from conftest import REPO_ROOT

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC).timestamp()
A = "playbook=deploy.yml user=alice controller=ctl-1 awx_job=-"
B = "playbook=dr-failover.yml user=bob controller=ctl-2 awx_job=42"
KINDS = {"configmap": "ConfigMap", "lease": "Lease"}


class FakeCluster:
    """One namespace of one cluster, as the API server answers the module's calls."""

    def __init__(self, name: str, namespace: str = "sapphire-system", *, namespace_exists: bool = True,
                 unreachable: bool = False) -> None:
        self.name = name
        self.namespace = namespace
        self.namespace_exists = namespace_exists
        self.unreachable = unreachable
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 100
        self.conflicts: list[str] = []  # kinds whose next write answers 409 (another writer came first)
        self.before_write: Any = None  # called before a write, to simulate a concurrent writer
        self.writes: list[tuple[str, str]] = []

    def _check(self) -> None:
        if self.unreachable:
            raise ApiError(None, f"cannot reach the API server of {self.name} (ConnectionRefusedError)")

    def _store(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"].setdefault("creationTimestamp", format_time(NOW - 3600))
        self.objects[(kind, stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def _conflict(self, kind: str) -> None:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(self)
        if kind in self.conflicts:
            self.conflicts.remove(kind)
            raise ApiError(409, "409 Conflict: the object has been modified")

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        self._check()
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        assert body["kind"] == KINDS[kind] and "resourceVersion" not in body["metadata"]
        self._conflict(kind)
        if not self.namespace_exists:
            raise ApiError(404, f'404 Not Found: namespaces "{self.namespace}" not found')
        if (kind, body["metadata"]["name"]) in self.objects:
            raise ApiError(409, "409 Conflict: already exists")
        self.writes.append(("create", kind))
        return self._store(kind, body)

    def replace(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check()
        self._conflict(kind)
        current = self.objects.get((kind, name))
        if current is None:
            raise ApiError(404, "404 Not Found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "409 Conflict: the object has been modified; please apply your changes to the latest "
                                "version")
        self.writes.append(("replace", kind))
        return self._store(kind, body)

    def create_namespace(self) -> None:
        self._check()
        self.namespace_exists = True

    # helpers for the tests
    def put_state(self, epoch: int, live_region: str = "primary", **extra: Any) -> None:
        state = {"epoch": epoch, "live_region": live_region, "host_overrides": {}, "history": [], **extra}
        self._store("configmap", {"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "sapphire-state", "namespace": self.namespace},
                                  "data": {"state.json": json.dumps(state)}})

    def state(self) -> dict[str, Any] | None:
        obj = self.objects.get(("configmap", "sapphire-state"))
        return json.loads(obj["data"]["state.json"]) if obj else None

    def put_lease(self, holder: str | None, renewed_ago: float = 0.0, duration: int = 120) -> None:
        lease = lease_object("sapphire-operations", self.namespace, None, holder or "", NOW - renewed_ago - 60,
                             duration)
        lease["spec"]["renewTime"] = format_time(NOW - renewed_ago)
        if holder is None:
            lease["spec"].pop("holderIdentity")
        self._store("lease", lease)

    def lease(self) -> dict[str, Any] | None:
        return self.objects.get(("lease", "sapphire-operations"))

    def holder(self) -> str | None:
        lease = self.lease()
        return (lease or {}).get("spec", {}).get("holderIdentity")


def clock(start: float = NOW) -> Any:
    return lambda: start


# ----------------------------------------------------------------------------------------- time
@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-21T12:00:00Z", NOW),
    ("2026-11-21T12:00:00.000000Z", NOW),
    ("2026-11-21T12:00:00.5Z", NOW + 0.5),
    ("2026-11-21T12:00:00.123456789Z", NOW + 0.123456),  # nanoseconds: cut to microseconds
    ("2026-11-21T13:00:00+01:00", NOW),
    ("2026-11-21T13:00:00+0100", NOW),
    ("2026-11-21T12:00:00", NOW),  # no zone: UTC
    ("2026-11-21 12:00:00z", NOW),
    ("yesterday", None),
    ("", None),
    (None, None),
    (1764000000, None),
])
def test_times_are_read_as_the_api_writes_them(text: Any, expected: float | None) -> None:
    parsed = parse_time(text)
    assert parsed == pytest.approx(expected) if expected is not None else parsed is None


def test_micro_time_is_rfc3339_with_microseconds_and_z_and_reads_back() -> None:
    stamp = format_time(NOW + 0.25)
    assert stamp == "2026-11-21T12:00:00.250000Z"
    assert parse_time(stamp) == pytest.approx(NOW + 0.25)


# ----------------------------------------------------------------------------------------- holder
@pytest.mark.parametrize(("holder", "expected"), [
    ({"playbook": "deploy.yml", "user": "alice", "controller": "ctl-1", "awx_job_id": None},
     "playbook=deploy.yml user=alice controller=ctl-1 awx_job=-"),
    ({"playbook": "dr-failover.yml", "user": "bob", "controller": "ctl-2", "awx_job_id": 42},
     "playbook=dr-failover.yml user=bob controller=ctl-2 awx_job=42"),
    ({"playbook": "deploy.yml", "user": "Jane Doe", "controller": "", "awx_job_id": ""},
     "playbook=deploy.yml user=Jane_Doe controller=- awx_job=-"),
    ({"playbook": "deploy.yml", "user": "a", "controller": "c", "awx_job_id": "7", "run_id": 4242},
     "playbook=deploy.yml user=a controller=c awx_job=7 run=4242"),
])
def test_holder_identity_is_one_compact_parseable_string(holder: dict[str, Any], expected: str) -> None:
    assert holder_identity(holder) == expected
    assert all(len(part.split("=", 1)) == 2 for part in expected.split())


# ----------------------------------------------------------------------------------------- state merge
def read(name: str, epoch: int | None, reachable: bool = True, updated: str | None = None) -> ClusterState:
    if not reachable:
        return ClusterState(name, False, error="connection refused")
    if epoch is None:
        return ClusterState(name, True)
    state = {"epoch": epoch, "live_region": "dr" if epoch % 2 else "primary", "host_overrides": {}, "history": [],
             "updated": updated, "updated_by": None}
    return ClusterState(name, True, state=state, obj={"metadata": {"resourceVersion": "1"}})


@pytest.mark.parametrize(("reads", "epoch", "source", "stale", "found"), [
    ([read("primary", None), read("dr", None)], 0, None, ["primary", "dr"], False),  # fresh platform
    ([read("primary", 1), read("dr", 1)], 1, "primary", [], True),  # equal: the first listed
    ([read("primary", 1), read("dr", 2)], 2, "dr", ["primary"], True),
    ([read("primary", 3), read("dr", None)], 3, "primary", ["dr"], True),  # lacking the object = stale
    ([read("primary", 1), read("dr", 5, reachable=False)], 1, "primary", [], True),  # unreachable: not stale
    ([read("primary", None, reachable=False), read("dr", None, reachable=False)], 0, None, [], False),
    ([read("primary", 2, updated="2026-11-21T10:00:00Z"), read("dr", 2, updated="2026-11-21T11:00:00Z")],
     2, "dr", [], True),  # equal epochs: the later write
])
def test_the_highest_epoch_among_reachable_clusters_wins(reads: list[ClusterState], epoch: int, source: str | None,
                                                         stale: list[str], found: bool) -> None:
    merge = merge_states(reads)
    assert (merge.state["epoch"], merge.source, merge.stale, merge.found) == (epoch, source, stale, found)
    if not found:
        assert merge.state["live_region"] == "primary" and merge.state["host_overrides"] == {}


def test_an_unreadable_state_object_is_stale_and_reported() -> None:
    cluster = FakeCluster("local-dr")
    cluster._store("configmap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sapphire-state"},
                                 "data": {"state.json": "{not json"}})
    healthy = FakeCluster("local-primary")
    healthy.put_state(4, "dr")
    result = read_action([healthy, cluster], "sapphire-state")
    assert result["state"]["epoch"] == 4 and result["unreadable"] == ["local-dr"] and result["stale"] == ["local-dr"]
    assert "not JSON" in result["clusters"][1]["error"] and result["clusters"][1]["reachable"] is True
    assert any("unreadable" in warning for warning in result["warnings"])


@pytest.mark.parametrize(("state", "problem"), [
    ({"epoch": 1, "live_region": "dr", "host_overrides": {}}, None),
    ({"epoch": -1, "live_region": "dr"}, "epoch"),
    ({"epoch": True, "live_region": "dr"}, "epoch"),
    ({"epoch": "2", "live_region": "dr"}, "epoch"),
    ({"epoch": 1, "live_region": ""}, "live_region"),
    ({"epoch": 1, "live_region": "dr", "host_overrides": {"redis-dr": "primary"}}, "host_overrides"),
    ({"epoch": 1, "live_region": "dr", "history": "failover"}, "history"),
    ([1], "dict"),
])
def test_a_state_document_is_checked(state: Any, problem: str | None) -> None:
    found = state_problem(state)
    assert (found is None) if problem is None else (problem in str(found))


# ----------------------------------------------------------------------------------------- history
@pytest.mark.parametrize(("before", "entry", "length", "first", "last"), [
    (0, True, 1, 0, 0),
    (HISTORY_KEEP - 1, True, HISTORY_KEEP, 0, HISTORY_KEEP - 1),
    (HISTORY_KEEP, True, HISTORY_KEEP, 1, HISTORY_KEEP),  # the oldest goes
    (HISTORY_KEEP + 10, False, HISTORY_KEEP, 10, HISTORY_KEEP + 9),  # an old longer history is trimmed too
])
def test_history_keeps_the_newest_fifty(before: int, entry: bool, length: int, first: int, last: int) -> None:
    history = [{"n": index, "id": f"e{index}"} for index in range(before)]
    result = append_history(history, {"n": before, "id": f"e{before}"} if entry else None)
    assert (len(result), result[0]["n"], result[-1]["n"]) == (length, first, last)


def test_an_entry_already_there_is_not_appended_twice() -> None:
    entry = stamp_entry({"operation": "emergency-stop"}, NOW, A)
    assert set(entry) >= {"id", "ts", "by"} and entry["by"] == A
    once = append_history([], entry)
    assert append_history(once, entry) == once


# ----------------------------------------------------------------------------------------- lease decision
def lease(holder: str | None, renewed_ago: float | None = 0, duration: int = 120) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration, "acquireTime": format_time(NOW - 3000)}
    if holder is not None:
        spec["holderIdentity"] = holder
    if renewed_ago is not None:
        spec["renewTime"] = format_time(NOW - renewed_ago)
    else:
        spec.pop("acquireTime")
    return {"metadata": {"name": "sapphire-operations", "resourceVersion": "7"}, "spec": spec}


@pytest.mark.parametrize(("existing", "break_lock", "action"), [
    (None, False, "create"),  # free: nobody made the lease yet
    (lease(A, 10), False, "renew"),  # ours: re-entrant
    (lease(A, 10_000), False, "renew"),  # ours even when stale
    (lease(None, 10), False, "free"),  # released: holderIdentity cleared
    (lease("", 10), False, "free"),
    (lease(B, 10), False, "held"),
    (lease(B, 129), False, "held"),  # 120 s + 10 s skew not passed yet
    (lease(B, 131), False, "stale"),
    (lease(B, 10, duration=15), False, "held"),
    (lease(B, 26, duration=15), False, "stale"),  # the holder's own duration counts
    (lease(B, 10), True, "break"),
    (lease(B, 500), True, "stale"),  # stale anyway: no need to break
    (lease(B, None), False, "stale"),  # no renewTime and no acquireTime: only the creation time, long ago
])
def test_lease_decision(existing: dict[str, Any] | None, break_lock: bool, action: str) -> None:
    decision = decide_lease(existing, A, NOW, 10, break_lock, 120)
    assert decision.action == action
    if action == "held":
        assert decision.holder == B and decision.stale_in is not None and decision.stale_in > 0


@pytest.mark.parametrize(("skew", "renewed_ago", "action"), [(0, 121, "stale"), (10, 121, "held"), (60, 179, "held"),
                                                            (60, 181, "stale")])
def test_skew_delays_a_takeover(skew: int, renewed_ago: float, action: str) -> None:
    assert decide_lease(lease(B, renewed_ago), A, NOW, skew, False, 120).action == action


def test_lease_object_keeps_acquire_time_on_renewal_and_counts_transitions() -> None:
    created = lease_object("sapphire-operations", "ns", None, A, NOW, 120)
    assert created["spec"] == {"holderIdentity": A, "leaseDurationSeconds": 120, "acquireTime": format_time(NOW),
                               "renewTime": format_time(NOW), "leaseTransitions": 0}
    assert created["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sapphire-ops"
    renewed = lease_object("sapphire-operations", "ns", created, A, NOW + 30, 120)
    assert renewed["spec"]["acquireTime"] == format_time(NOW) and renewed["spec"]["renewTime"] == format_time(NOW + 30)
    taken = lease_object("sapphire-operations", "ns", renewed, B, NOW + 60, 120)
    assert taken["spec"]["acquireTime"] == format_time(NOW + 60) and taken["spec"]["leaseTransitions"] == 1


# ----------------------------------------------------------------------------------------- write / record
def test_write_creates_namespace_and_state_then_is_idempotent() -> None:
    primary, dr = FakeCluster("local-primary", namespace_exists=False), FakeCluster("local-dr")
    result = write_action([primary, dr], "sapphire-state", "sapphire-system",
                          {"epoch": 1, "live_region": "primary", "host_overrides": {}}, None, A, NOW, False)
    assert result["changed"] and result["written"] == ["local-primary", "local-dr"]
    assert primary.namespace_exists and primary.state()["epoch"] == 1 and dr.state()["updated_by"] == A
    again = write_action([primary, dr], "sapphire-state", "sapphire-system",
                         {"epoch": 1, "live_region": "primary", "host_overrides": {}}, None, A, NOW + 5, False)
    assert not again["changed"] and again["written"] == []


def test_write_refuses_a_lower_epoch_naming_the_newer_cluster() -> None:
    primary, dr = FakeCluster("local-primary"), FakeCluster("local-dr")
    primary.put_state(1)
    dr.put_state(3, "dr")
    with pytest.raises(StateFailure) as failure:
        write_action([primary, dr], "sapphire-state", "ns", {"epoch": 2, "live_region": "primary"}, None, A, NOW,
                     False)
    assert "epoch 2" in failure.value.msg and "local-dr holds epoch 3" in failure.value.msg
    assert primary.writes == [] and dr.writes == []


def test_write_of_a_lost_race_fails_and_asks_to_rerun() -> None:
    primary = FakeCluster("local-primary")
    primary.put_state(1)
    primary.before_write = lambda cluster: cluster.put_state(2, "dr")  # another run writes between read and write
    with pytest.raises(StateFailure) as failure:
        write_action([primary], "sapphire-state", "ns", {"epoch": 2, "live_region": "primary"}, None, A, NOW, False)
    assert "concurrently" in failure.value.msg and "Re-run" in failure.value.msg
    assert primary.state()["live_region"] == "dr"


def test_write_in_check_mode_reports_and_writes_nothing_with_a_diff() -> None:
    primary = FakeCluster("local-primary")
    primary.put_state(1)
    result = write_action([primary, FakeCluster("local-dr", unreachable=True)], "sapphire-state", "ns",
                          {"epoch": 2, "live_region": "dr"}, {"operation": "dr-failover"}, A, NOW, True)
    assert result["changed"] and result["written"] == ["local-primary"] and primary.writes == []
    assert result["diff"]["before"]["epoch"] == 1 and result["diff"]["after"]["epoch"] == 2
    assert result["diff"]["after"]["history"][-1]["operation"] == "dr-failover"
    assert any("local-dr" in warning for warning in result["warnings"])


def test_write_keeps_the_history_when_the_state_has_none_and_appends_the_entry() -> None:
    primary = FakeCluster("local-primary")
    primary.put_state(1, history=[{"operation": "deploy", "id": "x"}])
    write_action([primary], "sapphire-state", "ns", {"epoch": 2, "live_region": "dr", "host_overrides": {}},
                 {"operation": "dr-failover"}, A, NOW, False)
    assert [item["operation"] for item in primary.state()["history"]] == ["deploy", "dr-failover"]


def test_write_fails_when_no_cluster_answers() -> None:
    with pytest.raises(StateFailure, match="no cluster could be reached"):
        write_action([FakeCluster("local-primary", unreachable=True)], "sapphire-state", "ns",
                     {"epoch": 1, "live_region": "primary"}, None, A, NOW, False)


def test_record_keeps_epoch_and_region_and_retries_a_conflict() -> None:
    primary, dr = FakeCluster("local-primary"), FakeCluster("local-dr")
    primary.put_state(3, "dr")
    dr.put_state(3, "dr")
    dr.conflicts.append("configmap")  # the first write to dr loses a race
    result = record_action([primary, dr], "sapphire-state", "ns", {"operation": "emergency-stop"}, A, clock(), False)
    assert result["changed"] and sorted(result["written"]) == ["local-dr", "local-primary"]
    for cluster in (primary, dr):
        state = cluster.state()
        assert (state["epoch"], state["live_region"]) == (3, "dr")
        assert [item["operation"] for item in state["history"]] == ["emergency-stop"]  # once, despite the retry


def test_record_gives_up_after_three_retries() -> None:
    primary = FakeCluster("local-primary")
    primary.put_state(1)
    primary.conflicts.extend(["configmap"] * 4)
    with pytest.raises(StateFailure, match="4 attempts"):
        record_action([primary], "sapphire-state", "ns", {"operation": "emergency-stop"}, A, clock(), False)


# ----------------------------------------------------------------------------------------- acquire / release
def acquire(clusters: list[FakeCluster], ours: str = A, *, break_lock: bool = False, check_mode: bool = False,
            now: float = NOW) -> dict[str, Any]:
    return acquire_action(clusters, "sapphire-operations", "sapphire-system", ours, clock(now), 120, 10, break_lock,
                          "the run of bob died with its controller" if break_lock else None, check_mode)


def test_acquire_takes_every_reachable_cluster_and_is_reentrant() -> None:
    primary, dr = FakeCluster("local-primary", namespace_exists=False), FakeCluster("local-dr")
    result = acquire([primary, dr])
    assert result["acquired"] == ["local-dr", "local-primary"] and result["changed"] and result["took_over"] is None
    assert primary.holder() == A and dr.holder() == A
    again = acquire([primary, dr], now=NOW + 30)
    assert again["acquired"] == ["local-dr", "local-primary"]
    assert dr.lease()["spec"]["renewTime"] == format_time(NOW + 30)
    assert dr.lease()["spec"]["acquireTime"] == format_time(NOW)


def test_acquire_fails_naming_the_holder_and_gives_back_what_it_took() -> None:
    dr, primary = FakeCluster("local-dr"), FakeCluster("local-primary")
    primary.put_lease(B, renewed_ago=20)  # local-dr comes first by name and is taken, then local-primary refuses
    with pytest.raises(StateFailure) as failure:
        acquire([primary, dr])
    message = failure.value.msg
    assert B in message and "local-primary" in message and "since" in message and "goes stale in" in message
    assert "sapphire_lock_break=true" in message and "sapphire_lock_break_reason" in message
    assert dr.holder() is None  # given back
    assert failure.value.result["held"]["holder"] == B and failure.value.result["acquired"] == []


def test_acquire_in_check_mode_warns_instead_of_failing_and_changes_nothing() -> None:
    primary = FakeCluster("local-primary")
    primary.put_lease(B, renewed_ago=20)
    result = acquire([primary, FakeCluster("local-dr")], check_mode=True)
    assert result["acquired"] == [] and not result["changed"] and B in result["warnings"][0]
    assert primary.writes == []


def test_acquire_takes_over_a_stale_lease_and_reports_the_previous_holder() -> None:
    primary = FakeCluster("local-primary")
    primary.put_lease(B, renewed_ago=3600)
    result = acquire([primary])
    assert primary.holder() == A
    assert result["took_over"]["holder"] == B and result["took_over"]["how"] == "stale"
    assert result["took_over"]["clusters"] == ["local-primary"]


def test_break_lock_takes_a_fresh_lease_and_records_why() -> None:
    primary = FakeCluster("local-primary")
    primary.put_lease(B, renewed_ago=5)
    result = acquire([primary], break_lock=True)
    note = primary.lease()["metadata"]["annotations"][BROKEN_ANNOTATION]
    assert primary.holder() == A and result["took_over"]["how"] == "broken"
    assert note.startswith(A) and "the run of bob died" in note and f"previous holder {B}" in note


def test_a_released_lease_is_free() -> None:
    primary = FakeCluster("local-primary")
    primary.put_lease(None, renewed_ago=5)
    assert acquire([primary])["took_over"] is None and primary.holder() == A


def test_acquire_races_on_create_then_sees_the_winner() -> None:
    primary = FakeCluster("local-primary")
    primary.before_write = lambda cluster: cluster.put_lease(B)  # B creates it between our read and our create
    with pytest.raises(StateFailure, match="is held by"):
        acquire([primary])


def test_acquire_skips_an_unreachable_cluster_and_fails_when_none_answers() -> None:
    result = acquire([FakeCluster("local-primary"), FakeCluster("local-dr", unreachable=True)])
    assert result["acquired"] == ["local-primary"] and result["reachable"] == 1
    assert any("local-dr" in warning for warning in result["warnings"])
    with pytest.raises(StateFailure, match="no cluster could be reached to take the operations lock"):
        acquire([FakeCluster("local-dr", unreachable=True)])


def test_release_clears_only_our_lease_and_never_fails() -> None:
    mine, theirs, gone = FakeCluster("a"), FakeCluster("b"), FakeCluster("c", unreachable=True)
    mine.put_lease(A)
    theirs.put_lease(B)
    result = release_action([mine, theirs, gone], "sapphire-operations", A, clock(), False)
    assert result["released"] == ["a"] and result["changed"]
    assert mine.holder() is None and "sapphire.io/released" in mine.lease()["metadata"]["annotations"]
    assert theirs.holder() == B
    assert len(result["warnings"]) == 2
    assert not release_action([mine], "sapphire-operations", A, clock(), False)["changed"]


# ----------------------------------------------------------------------------------------- renewer
class Ticks:
    """A clock the renewer's sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return NOW + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def renewer(clusters: list[FakeCluster], alive: Any, ticks: Ticks, max_seconds: float = 3600) -> str:
    config = {"holder": A, "lease_name": "sapphire-operations", "lease_duration_seconds": 20, "interval": 5,
              "max_seconds": max_seconds, "watch_pid": 4242, "poll": 1}
    return run_renewer(config, clusters, alive, wall=ticks.wall, monotonic=ticks.monotonic, sleep=ticks.sleep,
                       log=lambda _line: None)


@pytest.mark.parametrize(("duration", "interval"), [(120, 30.0), (20, 5.0), (8, 5.0), (600, 150.0)])
def test_renew_interval(duration: int, interval: float) -> None:
    assert renew_interval(duration) == interval


def test_renewer_renews_while_the_playbook_runs_and_releases_when_it_ends() -> None:
    primary, dr = FakeCluster("local-primary"), FakeCluster("local-dr")
    primary.put_lease(A)
    dr.put_lease(A)
    ticks = Ticks()
    reason = renewer([primary, dr], lambda: ticks.now < 23, ticks)
    assert "ended" in reason and primary.holder() is None and dr.holder() is None
    assert primary.writes.count(("replace", "lease")) == 5  # 4 renewals (5, 10, 15, 20 s) and the release


def test_renewer_stops_renewing_a_lease_someone_else_took() -> None:
    primary, dr = FakeCluster("local-primary"), FakeCluster("local-dr")
    primary.put_lease(A)
    dr.put_lease(A)
    ticks = Ticks()

    def alive() -> bool:
        if ticks.now >= 7 and dr.holder() == A:
            dr.put_lease(B)  # broken by B
        return ticks.now < 30

    renewer([primary, dr], alive, ticks)
    assert dr.holder() == B and primary.holder() is None  # B's lease untouched; ours released


def test_renewer_ends_when_no_lease_is_left_and_after_its_lifetime() -> None:
    primary = FakeCluster("local-primary")
    primary.put_lease(B)
    assert "no lease left" in renewer([primary], lambda: True, Ticks())
    mine = FakeCluster("local-primary")
    mine.put_lease(A)
    assert "limit" in renewer([mine], lambda: True, Ticks(), max_seconds=60) and mine.holder() == A


def test_the_renewer_runs_from_a_copy_without_ansible(tmp_path: Path) -> None:
    copy_path = tmp_path / "renewer.py"
    copy_path.write_text((REPO_ROOT / "module_utils" / "sapphire_state.py").read_text())
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.modules['ansible'] = None; "
                           f"sys.argv = ['renewer.py']; exec(open({str(copy_path)!r}).read())"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "usage" in proc.stderr, proc.stderr


PY = "/work/main/.venv/bin/python"
PLAYBOOK = [PY, "/work/main/.venv/bin/ansible-playbook", "deploy.yml"]


@pytest.mark.parametrize(("tree", "expected"), [
    # module 500 <- sh 400 <- worker 300 (a fork of the main process) <- main 200 <- bash 100
    ({500: (400, [PY, "AnsiballZ"]), 400: (300, ["/bin/sh", "-c"]), 300: (200, PLAYBOOK), 200: (100, PLAYBOOK),
      100: (1, ["bash"])}, 200),
    # AWX / ansible-runner: ansible-playbook run directly
    ({500: (400, [PY]), 400: (300, ["ansible-playbook", "x.yml"]), 300: (200, ["ansible-playbook", "x.yml"]),
      200: (1, ["ansible-runner"])}, 300),
    # a playbook run by a task of another playbook: the inner run, not the outer one
    ({500: (400, [PY]), 400: (300, PLAYBOOK), 300: (250, PLAYBOOK), 250: (240, ["/bin/sh"]), 240: (230, [PY]),
      230: (220, PLAYBOOK), 220: (1, PLAYBOOK)}, 300),
    ({500: (400, [PY]), 400: (1, ["ansible", "localhost"])}, None),  # ad hoc: no playbook to watch
])
def test_watch_pid_zero_finds_the_playbook_process_not_the_task_worker(tree: dict[int, tuple[int, list[str]]],
                                                                       expected: int | None) -> None:
    found = playbook_process(500, parent=lambda pid: tree.get(pid, (0, []))[0],
                             cmdline=lambda pid: tree.get(pid, (0, []))[1])
    assert found == expected


# ----------------------------------------------------------------------------------------- parameters
BASE = {"clusters": [{"name": "local-primary", "kubeconfig": "/nonexistent"}]}


@pytest.mark.parametrize(("args", "parameter"), [
    ({}, "action"),
    ({"action": "lock"}, "action"),
    ({"action": "write"}, "state"),
    ({"action": "write", "state": {"epoch": -1, "live_region": "dr"}}, "epoch"),
    ({"action": "write", "state": {"epoch": 1}}, "live_region"),
    ({"action": "record", "holder": {"playbook": "emergency-stop.yml"}}, "history_entry"),
    ({"action": "acquire"}, "holder"),
    ({"action": "acquire", "holder": {"user": "alice"}}, "playbook"),
    ({"action": "acquire", "holder": {"playbook": "p"}, "break_lock": True}, "break_reason"),
    ({"action": "acquire", "holder": {"playbook": "p"}, "break_lock": True, "break_reason": " "}, "break_reason"),
    ({"action": "read", "watch_pid": 1}, "watch_pid"),
    ({"action": "acquire", "holder": {"playbook": "p"}, "watch_pid": 2 ** 22 + 7}, "watch_pid"),
    ({"action": "acquire", "holder": {"playbook": "p"}, "watch_pid": -3}, "watch_pid"),
    ({"action": "acquire", "holder": {"playbook": "p"}, "watch_pid": 0}, "watch_pid 0"),  # pytest is no playbook
    ({"action": "read", "lease_duration_seconds": 0}, "lease_duration_seconds"),
    ({"action": "read", "request_timeout": "slow"}, "request_timeout"),
    ({"action": "read", "namespace": "Sapphire System"}, "namespace"),
    ({"action": "read", "clusters": []}, "clusters"),
    ({"action": "read", "clusters": [{"kubeconfig": "/k"}]}, "name"),
    ({"action": "read", "clusters": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
    ({"action": "read", "clusters": [{"name": "a", "server": "https://x"}]}, "server"),
])
def test_bad_parameters_are_refused_naming_them(module_runner: Any, args: dict[str, Any], parameter: str) -> None:
    result = module_runner("sapphire_state", {**BASE, **args})
    assert result.get("failed") is True, result
    assert parameter in result["msg"]


def test_read_of_an_unreachable_cluster_does_not_fail(module_runner: Any) -> None:
    result = module_runner("sapphire_state", {**BASE, "action": "read"})
    assert not result.get("failed") and result["changed"] is False
    assert result["clusters"][0]["reachable"] is False and "/nonexistent" in result["clusters"][0]["error"]
    assert result["reachable"] == 0 and result["found"] is False
    assert result["state"] is None  # nothing answered: unknown, not a fresh platform


def test_param_problems_accepts_a_good_acquire() -> None:
    params = {"clusters": [{"name": "a"}, {"name": "b"}], "namespace": "sapphire-system", "action": "acquire",
              "lease_name": "sapphire-operations", "state_name": "sapphire-state", "lease_duration_seconds": 120,
              "skew_seconds": 10, "request_timeout": 5, "holder": {"playbook": "deploy.yml"},
              "watch_pid": None, "break_lock": False}
    assert param_problems(params) == []


@pytest.mark.parametrize(("holder", "alive", "ended"), [
    ("playbook=deploy user=u controller=vm awx_job=- run=vm:4242", False, True),   # this controller, process gone
    ("playbook=deploy user=u controller=vm awx_job=- run=vm:4242", True, False),   # still running
    ("playbook=deploy user=u controller=other awx_job=- run=other:4242", False, False),  # another controller
    ("playbook=deploy user=u controller=vm awx_job=-", False, False),              # no run id: only its lease tells
])
def test_a_lease_of_an_ended_run_of_this_controller_is_free_at_once(holder: str, alive: bool, ended: bool) -> None:
    from ansible.module_utils.sapphire_state import decide_lease, ended_run

    assert ended_run(holder, "vm", lambda pid: alive) is ended
    now = 1_800_000_000.0
    lease = {"spec": {"holderIdentity": holder, "leaseDurationSeconds": 120,
                      "renewTime": "2027-01-15T08:00:00.000000Z"}}  # renewed just now: fresh
    decision = decide_lease(lease, "playbook=backup run=vm:1", now, 10, False, 120,
                            lambda text: ended_run(text, "vm", lambda pid: alive))
    assert decision.action == ("stale" if ended else "held")
