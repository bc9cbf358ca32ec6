"""Filters of backups in the object store (filter_plugins/backups.py): pgBackRest's info read per repository, a restore
target turned into pgBackRest's arguments, and the retention by backup id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

backups = load_module("backups", "filter_plugins")

# `pgbackrest --output=json info` of the local default after one backup.yml run (two repositories, one full each).
INFO = json.loads((Path(__file__).parent / "data" / "pgbackrest-info.json").read_text())
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()


def backup_id(days_ago: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def test_the_newest_backup_of_each_repository_is_read_with_its_bucket() -> None:
    repos = backups.pgbackrest_newest(INFO, "sapphire", ["backups-primary", "backups-dr"])
    assert [(item["repo"], item["bucket"], item["label"], item["type"]) for item in repos] == [
        (1, "backups-primary", "20261205-113742F", "full"), (2, "backups-dr", "20261205-113744F", "full")]
    assert repos[0]["bytes"] == 31897381 and repos[0]["repo_bytes"] == 6203376
    assert repos[0]["stopped"] == "2026-12-05T11:37:43Z" and repos[0]["wal_start"] == "000000010000000000000005"
    assert repos[0]["status"] == "ok"


def test_a_repository_without_a_backup_is_reported_empty_never_borrowed_from_the_other() -> None:
    info = json.loads(json.dumps(INFO))
    info[0]["backup"] = [item for item in info[0]["backup"] if item["database"]["repo-key"] == 1]
    repos = backups.pgbackrest_newest(info, "sapphire", ["a", "b"])
    assert repos[1]["label"] == "" and repos[0]["label"] == "20261205-113742F"
    with pytest.raises(AnsibleFilterError, match="postgres_pgbackrest_stanza"):
        backups.pgbackrest_newest(INFO, "other", ["a"])


def test_restore_arguments_for_a_backup_set_and_for_a_point_in_time() -> None:
    assert backups.pgbackrest_restore_args("20261205-113742F", "", 2) == [
        "--repo=2", "--type=immediate", "--target-action=promote", "--set=20261205-113742F"]
    # PITR: UTC with microseconds; pgBackRest chooses the set when no label is given.
    assert backups.pgbackrest_restore_args("", "2026-12-05T13:11:12.5+02:00") == [
        "--repo=1", "--type=time", "--target=2026-12-05 11:11:12.500000+00", "--target-action=promote"]
    for bad, match in (("yesterday", "ISO 8601"), ("2026-12-05T10:00:00", "no time zone")):
        with pytest.raises(AnsibleFilterError, match=match):
            backups.pgbackrest_restore_args("", bad)


def test_only_ids_with_a_manifest_are_complete_backups() -> None:
    keys = ["backups/20261201T000000Z/manifest.json", "backups/20261202T000000Z/partial.json",
            "backups/notanid/manifest.json", "redis/20261203T000000Z/dump.rdb",
            "backups/20261130T000000Z/manifest.json"]
    assert backups.backup_ids(keys) == ["20261130T000000Z", "20261201T000000Z"]


def test_prune_removes_whole_expired_backups_and_never_the_newest_or_the_kept_one() -> None:
    ids = [backup_id(days) for days in (40, 35, 10, 8, 1)]
    plan = backups.backup_prune_plan(ids, {"postgres": 30, "redis": 7}, NOW)
    assert plan["expired"] == {"postgres": ids[:2], "redis": ids[:4]}
    assert plan["manifests"] == ids[:2]  # a manifest goes when every component's days passed
    assert plan["prefixes"][-2:] == [f"backups/{ids[0]}", f"backups/{ids[1]}"]  # manifests last
    assert f"redis/{ids[3]}" in plan["prefixes"] and f"redis/{ids[4]}" not in plan["prefixes"]
    # Backups stopped 40 days ago: the newest is kept however old, and the newest verified one too.
    old = [backup_id(days) for days in (60, 50, 40)]
    assert backups.backup_prune(old, 7, NOW)["expired"] == old[:2]
    assert backups.backup_prune(old, 7, NOW, keep=old[0])["expired"] == [old[1]]
    with pytest.raises(AnsibleFilterError, match="whole days"):
        backups.backup_prune(old, 0, NOW)


# kubernetes.core.k8s_info loop results as the local default returns them (list items carry no kind).
K8S_READ = [
    {"item": {"api_version": "v1", "kind": "Namespace"},
     "resources": [{"metadata": {"name": "trading-system", "uid": "u1", "resourceVersion": "7",
                                 "labels": {"app.kubernetes.io/part-of": "sapphire"}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}]},
    {"item": {"api_version": "v1", "kind": "ConfigMap"},
     "resources": [
         {"metadata": {"name": "sapphire-releases", "namespace": "trading-system", "managedFields": [{"x": 1}],
                       "creationTimestamp": "2026-12-05T10:00:00Z"},
          "data": {"current": "1.5.0", "previous": "1.4.0", "history": "1.4.0,1.5.0"}},
         {"metadata": {"name": "sapphire-release-1.5.0", "namespace": "trading-system"},
          "data": {"release": "1.5.0"}},
         {"metadata": {"name": "sapphire-release-1.4.0", "namespace": "trading-system"},
          "data": {"release": "1.4.0"}}]},
    {"item": {"api_version": "v1", "kind": "Secret"},
     "resources": [{"metadata": {"name": "postgres", "namespace": "trading-system"},
                    "data": {"password": "c2VjcmV0"}}]},
    {"item": {"api_version": "v1", "kind": "Service"},
     "resources": [{"metadata": {"name": "postgres", "namespace": "trading-system",
                                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                    "spec": {"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 5432}]}}]},
    {"item": {"api_version": "apps/v1", "kind": "Deployment"},
     "resources": [{"metadata": {"name": "trading-coordinator", "namespace": "trading-system",
                                 "ownerReferences": [{"uid": "u9"}], "generation": 3,
                                 "annotations": {"deployment.kubernetes.io/revision": "3", "team": "sre"}},
                    "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}]},
]
STATE = {"epoch": 2, "live_region": "dr", "host_overrides": {"redis-dr": {"redis_replication_role": "primary"}},
         "history": [{"operation": "failover", "epoch": 2}]}


def test_a_kubernetes_backup_holds_the_objects_a_restore_can_apply_and_no_secret() -> None:
    backup = backups.k8s_backup(K8S_READ, STATE)
    assert backup["state"] == STATE
    kinds = [(obj["kind"], obj["metadata"]["name"]) for obj in backup["objects"]]
    assert kinds == [("ConfigMap", "sapphire-release-1.4.0"), ("ConfigMap", "sapphire-release-1.5.0"),
                     ("ConfigMap", "sapphire-releases"), ("Deployment", "trading-coordinator"),
                     ("Namespace", "trading-system"), ("Service", "postgres")]
    assert "c2VjcmV0" not in json.dumps(backup)  # a Secret never goes into the bucket
    by_name = {obj["metadata"]["name"]: obj for obj in backup["objects"]}
    # What the API server set is gone; what the operator set stays.
    for obj in backup["objects"]:
        assert not set(obj["metadata"]) & {"uid", "resourceVersion", "managedFields", "creationTimestamp",
                                           "ownerReferences", "generation"}, obj
        assert "status" not in obj and obj["apiVersion"] in ("v1", "apps/v1")
    assert by_name["trading-coordinator"]["metadata"]["annotations"] == {"team": "sre"}
    assert "annotations" not in by_name["postgres"]["metadata"]
    assert by_name["postgres"]["spec"] == {"ports": [{"port": 5432}]}  # a rebuilt cluster allocates its own IPs
    assert by_name["trading-system"]["spec"] == {"finalizers": ["kubernetes"]}


def test_the_kubernetes_summary_names_releases_and_state_and_refuses_anything_else() -> None:
    summary = backups.k8s_backup_summary(backups.k8s_backup(K8S_READ, STATE))
    assert summary == {"objects": 6, "kinds": {"ConfigMap": 3, "Deployment": 1, "Namespace": 1, "Service": 1},
                       "release": "1.5.0", "releases": ["1.4.0", "1.5.0"], "state_epoch": 2, "live_region": "dr"}
    for bad in ({"objects": []}, [], "kubernetes.json"):
        with pytest.raises(AnsibleFilterError, match="not a Kubernetes state backup"):
            backups.k8s_backup_summary(bad)
    with pytest.raises(AnsibleFilterError, match="no epoch"):
        backups.k8s_backup(K8S_READ, {})
    with pytest.raises(AnsibleFilterError, match="reading"):
        backups.k8s_backup([{"item": {"kind": "Role"}, "failed": True, "msg": "forbidden"}], STATE)


def test_a_live_kubernetes_restore_applies_no_workload_and_never_an_older_state() -> None:
    backup = backups.k8s_backup(K8S_READ, STATE)
    plan = backups.k8s_restore_plan(backup, {"epoch": 0, "live_region": "primary"})  # rebuilt clusters
    assert [obj["kind"] for obj in plan["apply"]] == ["Namespace", "ConfigMap", "ConfigMap", "ConfigMap", "Service"]
    assert plan["workloads"] == ["Deployment trading-system/trading-coordinator"]  # deploy.yml renders them
    assert plan["state"] == STATE and "restored" in plan["state_reason"]
    for epoch in (2, 5):  # the clusters' state is as new or newer: it stays
        kept = backups.k8s_restore_plan(backup, {"epoch": epoch, "live_region": "primary"})
        assert kept["state"] is None and f"epoch {epoch}" in kept["state_reason"] and "kept" in kept["state_reason"]
