"""library/sapphire_k8s_list.py: the paths it lists (the agents role's read of what a namespace holds). Against a real
API server: every deploy of tests/integration (test_deploy's idempotence and drift tests read through it)."""

from __future__ import annotations

import pytest
from conftest import load_module

k8s_list = load_module("sapphire_k8s_list")


@pytest.mark.parametrize(("kind", "resource"), [
    ("Deployment", "deployments"), ("Service", "services"), ("ConfigMap", "configmaps"),
    ("NetworkPolicy", "networkpolicies"), ("PodDisruptionBudget", "poddisruptionbudgets"),
    ("HorizontalPodAutoscaler", "horizontalpodautoscalers"), ("Ingress", "ingresses"), ("Gateway", "gateways"),
    ("ServiceAccount", "serviceaccounts"), ("StorageClass", "storageclasses"),
    ("PersistentVolume", "persistentvolumes"), ("Node", "nodes")])
def test_the_plural_is_the_resource_the_api_serves(kind: str, resource: str) -> None:
    assert k8s_list.plural(kind) == resource


def test_core_and_group_kinds_are_listed_under_their_api() -> None:
    assert k8s_list.list_path("v1", "services", "ns") == "/api/v1/namespaces/ns/services"
    assert k8s_list.list_path("apps/v1", "deployments", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert k8s_list.list_path("v1", "nodes", None) == "/api/v1/nodes"
    assert k8s_list.list_path("storage.k8s.io/v1", "storageclasses", None) == "/apis/storage.k8s.io/v1/storageclasses"


def test_a_missing_named_object_lists_nothing_but_an_unserved_kind_fails() -> None:
    """A role reads single records (the release pointer, the halt record) by name: absent is an answer, a kind the API
    server does not serve is an error."""
    not_found = b'{"kind":"Status","reason":"NotFound","details":{"name":"sapphire-releases","kind":"configmaps"}}'
    assert k8s_list.object_not_found(404, not_found, "sapphire-releases")
    assert not k8s_list.object_not_found(404, not_found, "another-name")
    assert not k8s_list.object_not_found(404, b"404 page not found", "sapphire-releases")
    assert not k8s_list.object_not_found(403, not_found, "sapphire-releases")
