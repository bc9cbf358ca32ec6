"""filter_plugins/lifecycle.py: the decisions of cleanup, emergency stop / resume and rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
lifecycle = load_module("lifecycle", "filter_plugins")

NOW = 1_800_000_000.0
OURS = {"app.kubernetes.io/managed-by": "sapphire-ops", "app.kubernetes.io/part-of": "sapphire"}


def obj(kind: str, name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "labels": {**OURS, **(labels or {})}}
    meta.update(extra.pop("meta", {}))
    return {"kind": kind, "apiVersion": "v1", "metadata": meta, **extra}


def agent(kind: str, name: str) -> dict[str, Any]:
    return obj(kind, f"agent-{name}", {"app.kubernetes.io/component": "agent", "sapphire.io/agent": name})


def iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(name: str, finished: float | None, kind: str = "Complete") -> dict[str, Any]:
    status = {} if finished is None else {"conditions": [
        {"type": kind, "status": "True", "lastTransitionTime": iso(finished)}]}
    return obj("Job", name, {"app.kubernetes.io/component": "backup"}, status=status)


def plan(objects: list[dict[str, Any]], **kwargs: Any) -> list[tuple[str, str]]:
    return [(item["kind"], item["name"]) for item in
            lifecycle.cleanup_plan(objects, kwargs.pop("wanted", ["momentum"]), NOW, kwargs.pop("retention", "24h"),
                                   **kwargs)]


def test_removed_agent_objects_are_stale_and_nothing_else() -> None:
    objects = [agent(kind, name) for kind in ("Deployment", "ConfigMap", "PodDisruptionBudget",
                                              "HorizontalPodAutoscaler") for name in ("momentum", "pairs")]
    objects += [obj("Deployment", "trading-coordinator", {"app.kubernetes.io/component": "coordinator"}),
                obj("ConfigMap", "sapphire-release-1", {"app.kubernetes.io/component": "release"})]
    assert plan(objects) == [("HorizontalPodAutoscaler", "agent-pairs"), ("PodDisruptionBudget", "agent-pairs"),
                             ("Deployment", "agent-pairs"), ("ConfigMap", "agent-pairs")]
    whys = {item["why"] for item in lifecycle.cleanup_plan(objects, ["momentum"], NOW, 0)}
    assert whys == {"agent 'pairs' is no longer in trading_agents"}


def test_objects_without_the_toolkit_labels_are_never_candidates() -> None:
    foreign = agent("Deployment", "pairs")
    foreign["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    assert plan([foreign]) == []
    assert plan([foreign], scope="teardown") == []


def test_jobs_are_stale_only_after_the_retention() -> None:
    jobs = [job("old", NOW - 2 * 86400), job("fresh", NOW - 3600), job("running", None),
            job("failed-old", NOW - 90000, "Failed")]
    assert plan(jobs) == [("Job", "failed-old"), ("Job", "old")]
    assert plan(jobs, retention="3d") == []
    assert plan(jobs, retention=60) == [("Job", "failed-old"), ("Job", "fresh"), ("Job", "old")]


def test_failed_and_evicted_pods_are_stale_running_ones_not() -> None:
    pods = [obj("Pod", "evicted", status={"phase": "Failed", "reason": "Evicted"}),
            obj("Pod", "crashed", status={"phase": "Failed"}),
            obj("Pod", "running", status={"phase": "Running"})]
    items = lifecycle.cleanup_plan(pods, [], NOW, "1h")
    assert [(i["name"], i["why"]) for i in items] == [("crashed", "failed pod (Failed)"), ("evicted", "evicted pod")]


def test_data_is_kept_unless_included_and_named() -> None:
    data = [obj("PersistentVolumeClaim", "data-redis-0"), obj("Secret", "redis-credentials"),
            agent("Deployment", "gone")]
    assert plan(data, scope="teardown") == [("Deployment", "agent-gone")]
    assert plan(data, scope="teardown", include_data=True, data_names=[]) == [("Deployment", "agent-gone")]
    assert plan(data, scope="teardown", data_names=["data-redis-0"]) == [("Deployment", "agent-gone")]
    assert plan(data, scope="teardown", include_data=True, data_names=["data-redis-0"]) == [
        ("Deployment", "agent-gone"), ("PersistentVolumeClaim", "data-redis-0")]
    assert lifecycle.kept_data(data, True, ["data-redis-0"]) == ["Secret ns/redis-credentials"]


def test_teardown_leaves_owned_objects_to_their_owner() -> None:
    owned = obj("Pod", "agent-x-abc", meta={"ownerReferences": [{"kind": "ReplicaSet", "name": "agent-x-1"}]},
                status={"phase": "Running"})
    assert plan([owned, obj("Service", "redis")], scope="teardown") == [("Service", "redis")]


def test_bad_scope_and_duration_are_rejected() -> None:
    with pytest.raises(AnsibleFilterError, match="cleanup_scope"):
        lifecycle.cleanup_plan([], [], NOW, "1h", scope="everything")
    with pytest.raises(AnsibleFilterError, match="duration"):
        lifecycle.duration_seconds("a week")
    assert lifecycle.duration_seconds("36h") == 129600
    assert lifecycle.duration_seconds("2w") == 1209600


def test_a_provider_that_keeps_its_own_backups_is_named_not_failed() -> None:
    """prod (Cloud SQL, Memorystore): backup.yml reports both as kept by the provider; the toolkit backs up data hosts
    and self-managed servers itself and snapshots RDS; a component without a live primary is left to the refusal."""
    kept = lifecycle.backup_provider_managed(["postgres", "redis"], {"postgres": "cloudsql", "redis": "memorystore"})
    assert kept == {"postgres": "cloudsql", "redis": "memorystore"}
    assert lifecycle.backup_provider_managed(["postgres", "redis"], {"postgres": "rds", "redis": "self_managed"}) == {}
    assert lifecycle.backup_provider_managed(["redis"], {"postgres": "cloudsql", "redis": "host"}) == {}
    assert lifecycle.backup_provider_managed(["postgres"], {"postgres": ""}) == {}
    # A typo or a missing provider is refused naming the variable, not reported as the provider's backups.
    for wrong in ("self_manged", "unset"):
        with pytest.raises(AnsibleFilterError, match=f"redis_external_provider .* '{wrong}'"):
            lifecycle.backup_provider_managed(["redis"], {"redis": wrong})


def test_the_backup_summary_says_what_was_taken_where_and_what_the_provider_keeps() -> None:
    reports = [{"component": "redis", "host": "redis-east", "role": "primary", "replication_lag_seconds": 0,
                "files": [{"bytes": 100}, {"bytes": 23}], "prefix": "redis/20261205T000000Z",
                "buckets": ["backups-east", "backups-west"]},
               {"component": "postgres", "host": "rds-east", "role": "primary", "replication_lag_seconds": "n/a",
                "files": [], "snapshot": {"id": "snap-1", "copy_region": "us-west-2"}},
               {"component": "postgres", "host": "pg-east", "role": "primary", "replication_lag_seconds": 0.0,
                "files": [], "repositories": [
                    {"repo": 1, "bucket": "backups-east", "label": "20261205-000000F", "type": "full", "repo_bytes": 7},
                    {"repo": 2, "bucket": "backups-west", "label": ""}]},
               {"component": "redis", "host": "redis-east", "role": "primary", "replication_lag_seconds": 0,
                "files": [{"bytes": 5}]}]
    lines = lifecycle.backup_summary(reports, "20261205T000000Z", "east", {"redis": "elasticache"})
    assert lines[0] == ("redis 20261205T000000Z from redis-east (primary, lag 0 s; live region east): "
                        "123 bytes in backups-east, backups-west under redis/20261205T000000Z/")
    assert lines[1].endswith("snapshot snap-1, copy in us-west-2")
    # A repository without the backup is named, never summed into a success.
    assert lines[2].endswith("pgBackRest 20261205-000000F (full, 7 bytes stored) in bucket backups-east, "
                             "NO BACKUP (?, 0 bytes stored) in bucket backups-west")
    assert lines[3].endswith("5 bytes staged, not uploaded")
    assert lines[4].startswith("redis: NOT backed up by this toolkit: its provider (elasticache) keeps the backups")


def test_backup_retention_days_default_once_and_reject_nonsense() -> None:
    assert lifecycle.backup_retention_days(None) == {"postgres": 30, "redis": 7, "kubernetes": 30}
    # -e JSON or survey text
    assert lifecycle.backup_retention_days({"redis": "14"}) == {"postgres": 30, "redis": 14, "kubernetes": 30}
    for bad in ({"redis": 0}, {"redis": "a week"}, {"redis": True}, {"mongo": 3}, ["redis"]):
        with pytest.raises(AnsibleFilterError, match="backup_retention_days"):
            lifecycle.backup_retention_days(bad)


def deployment(name: str, replicas: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "ns", "annotations": annotations or {}},
            "spec": {"replicas": replicas}}


def test_resume_restores_recorded_counts_only() -> None:
    patches = lifecycle.resume_scale([deployment("agent-a", 0, {"sapphire.io/halted-replicas": "2"}),
                                      deployment("agent-b", 1)])
    assert patches == [{"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "agent-a", "namespace": "ns"}, "spec": {"replicas": 2}}]
    with pytest.raises(AnsibleFilterError, match="halted-replicas"):
        lifecycle.resume_scale([deployment("agent-a", 0, {"sapphire.io/halted-replicas": "two"})])


def test_release_pointer_moves_and_rollback_targets() -> None:
    first = lifecycle.release_pointer({}, "A")
    assert first == {"current": "A", "previous": "", "history": json.dumps(["A"])}
    assert lifecycle.release_pointer(first, "A") == first  # a second deploy of A changes nothing
    second = lifecycle.release_pointer(first, "B")
    assert (second["current"], second["previous"], json.loads(second["history"])) == ("B", "A", ["A", "B"])
    assert lifecycle.rollback_target(second, ["A", "B"]) == "A"
    assert lifecycle.rollback_target(second, ["A", "B"], "B") == "B"
    with pytest.raises(AnsibleFilterError, match="one of: A, B"):
        lifecycle.rollback_target(second, ["B", "A"], "C")
    with pytest.raises(AnsibleFilterError, match="no previous release"):
        lifecycle.rollback_target(first, ["A"])
    back = lifecycle.rollback_pointer(second, "A")
    assert (back["current"], back["previous"]) == ("A", "B")
    assert lifecycle.rollback_pointer(back, "A") == back


def test_release_objects_keep_agents_at_zero_while_halted() -> None:
    objects = [obj("Deployment", "agent-a", {"app.kubernetes.io/component": "agent"}, spec={"replicas": 2}),
               obj("Deployment", "trading-coordinator", {"app.kubernetes.io/component": "coordinator"},
                   spec={"replicas": 3})]
    assert [o["spec"]["replicas"] for o in lifecycle.release_objects(objects, halted=True)] == [0, 3]
    assert [o["spec"]["replicas"] for o in lifecycle.release_objects(objects)] == [2, 3]
    assert objects[0]["spec"]["replicas"] == 2  # the record itself is not modified


def test_release_object_name_is_a_valid_name() -> None:
    assert lifecycle.release_object_name("2026.11.0") == "sapphire-release-2026.11.0"
    assert lifecycle.release_object_name("V1_2+build") == "sapphire-release-v1-2-build"


def test_redis_primary_endpoint_prefers_the_region() -> None:
    hosts = [{"inventory_hostname": "r1", "redis_replication_role": "primary", "sapphire_region": "primary",
              "redis_port": 16379, "ansible_connection": "local"},
             {"inventory_hostname": "r2", "redis_replication_role": "replica", "sapphire_region": "dr",
              "redis_port": 16380},
             {"inventory_hostname": "r3", "redis_replication_role": "primary", "sapphire_region": "dr",
              "redis_port": 6379, "ansible_host": "10.0.0.3"}]
    assert lifecycle.redis_primary_endpoint(hosts, "primary") == {"host": "127.0.0.1", "port": 16379}
    assert lifecycle.redis_primary_endpoint(hosts, "dr") == {"host": "10.0.0.3", "port": 6379}
    assert lifecycle.redis_primary_endpoint(hosts[:2], "dr") == {"host": "127.0.0.1", "port": 16379}
    assert lifecycle.redis_primary_endpoint([], "dr") == {}


def test_release_objects_pack_small_enough_for_a_configmap_and_unpack_unchanged() -> None:
    """300 agents' rendered objects are over the 1 MiB ConfigMap limit as plain JSON (found by make bench)."""
    objects = [obj("Deployment", f"agent-{index}", spec={"replicas": 2, "template": {"spec": {"containers": [
        {"name": "agent", "image": "sapphire/agent:2026.11.0", "env": [{"name": f"VAR_{n}", "value": "x" * 40}
                                                                       for n in range(50)]}]}}})
               for index in range(300)]
    assert len(json.dumps(objects)) > 1024 * 1024
    packed = lifecycle.pack_objects(objects)
    assert len(packed) < 1024 * 1024 / 4
    assert packed == lifecycle.pack_objects(objects), "the same objects pack to the same bytes (idempotent apply)"
    assert lifecycle.unpack_objects({"binaryData": {"objects.json.gz": packed}}) == objects


def test_records_written_before_compression_still_unpack() -> None:
    objects = [obj("Deployment", "agent-momentum")]
    assert lifecycle.unpack_objects({"data": {"objects.json": json.dumps(objects)}}) == objects
    with pytest.raises(AnsibleFilterError, match="sapphire-release-x holds neither"):
        lifecycle.unpack_objects({"metadata": {"name": "sapphire-release-x"}, "data": {"release": "x"}})
