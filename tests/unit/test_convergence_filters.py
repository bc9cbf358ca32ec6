"""filter_plugins/sapphire.py: the filters that keep a converged host at changed=0, quickly.

- sapphire_unconverged: which node pools, storage classes and volumes the cluster role must apply.
  kwok rewrites node status and the binder rewrites volume status all the time, so the role
  decides from what the definitions set (status aside) whether anything needs applying.
- sapphire_missing_packages: which packages the host-mode roles must hand to apt (opening apt's
  cache costs seconds, dpkg-query does not).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
filters = load_module("sapphire", "filter_plugins")

NODE = {"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "local-primary-tpu-0", "labels": {"cloud.google.com/gke-tpu-topology": "2x2"},
                     "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"taints": [{"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "16", "google.com/tpu": "4"}}}
VOLUME = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-20gi-0"},
          "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "standard"}}


def as_served(obj: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The object as the API server returns it: defaults and controller-written status added."""
    served = copy.deepcopy(obj)
    served["metadata"].update({"uid": "abc", "resourceVersion": "42", "labels": {
        **served["metadata"].get("labels", {}), "kubernetes.io/os": "linux"}})
    served["spec"]["volumeMode"] = "Filesystem"
    served["status"] = status
    return served


def names(objects: list[dict[str, Any]]) -> list[str]:
    return [obj["metadata"]["name"] for obj in objects]


def test_a_converged_cluster_needs_nothing_even_when_controllers_rewrote_status() -> None:
    existing = [as_served(NODE, conditions=[{"type": "Ready", "status": "True", "lastHeartbeatTime": "now"}]),
                as_served(VOLUME, phase="Bound")]
    assert filters.unconverged([NODE, VOLUME], existing) == []


def test_missing_objects_are_applied() -> None:
    assert names(filters.unconverged([NODE, VOLUME], [as_served(VOLUME)])) == ["local-primary-tpu-0"]


def test_a_changed_label_or_taint_is_applied() -> None:
    relabelled = copy.deepcopy(NODE)
    relabelled["metadata"]["labels"]["cloud.google.com/gke-tpu-topology"] = "2x4"
    untainted = copy.deepcopy(NODE)
    untainted["spec"]["taints"] = []
    assert names(filters.unconverged([relabelled], [as_served(NODE)])) == ["local-primary-tpu-0"]
    assert names(filters.unconverged([untainted], [as_served(NODE)])) == ["local-primary-tpu-0"]


def test_objects_are_matched_by_kind_and_name() -> None:
    same_name = {**copy.deepcopy(VOLUME), "kind": "StorageClass"}
    assert names(filters.unconverged([VOLUME], [as_served(same_name)])) == ["pv-20gi-0"]


def test_only_packages_dpkg_does_not_list_as_installed_are_missing() -> None:
    dpkg = ["redis-server installed", "redis-tools not-installed", "libc6:amd64 installed"]
    assert filters.missing_packages(["redis-server", "redis-tools", "libc6", "prometheus"], dpkg) == [
        "redis-tools", "prometheus"]
    assert filters.missing_packages(["redis-server"], []) == ["redis-server"]


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "agent-momentum", "namespace": "trading-system", "labels": {"tier": "standard"}},
              "spec": {"replicas": 2, "template": {"spec": {"containers": [
                  {"name": "agent", "image": "sapphire/agent:2026.11.0", "env": [{"name": "A", "value": "1"}]}]}}}}


def applied(obj: dict[str, Any]) -> dict[str, Any]:
    return filters.with_applied_hash([obj])[0]


def test_a_namespaced_workload_applied_before_is_converged() -> None:
    live = as_served(applied(DEPLOYMENT))
    assert filters.unconverged([applied(DEPLOYMENT)], [live]) == []


def test_the_same_name_in_another_namespace_is_not_the_same_object() -> None:
    elsewhere = copy.deepcopy(DEPLOYMENT)
    elsewhere["metadata"]["namespace"] = "trading-staging"
    assert names(filters.unconverged([applied(DEPLOYMENT)], [as_served(applied(elsewhere))])) == ["agent-momentum"]


def test_a_field_the_template_stops_setting_changes_the_hash_and_is_applied() -> None:
    """Without the digest the old live object still contains every field the new definition sets."""
    live = as_served(applied(DEPLOYMENT))
    trimmed = copy.deepcopy(DEPLOYMENT)
    del trimmed["metadata"]["labels"]["tier"]
    assert filters.unconverged([trimmed], [live]) == [], "a plain subset check cannot see the removal"
    assert names(filters.unconverged([applied(trimmed)], [live])) == ["agent-momentum"]


def test_an_edit_made_by_hand_is_put_back() -> None:
    live = as_served(applied(DEPLOYMENT))
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "sapphire/agent:hand-edited"
    assert names(filters.unconverged([applied(DEPLOYMENT)], [live])) == ["agent-momentum"]


def test_kinds_lists_each_api_version_and_kind_once() -> None:
    objects = [DEPLOYMENT, VOLUME, DEPLOYMENT, NODE]
    assert filters.kinds(objects) == [{"api_version": "apps/v1", "kind": "Deployment"},
                                      {"api_version": "v1", "kind": "PersistentVolume"},
                                      {"api_version": "v1", "kind": "Node"}]
