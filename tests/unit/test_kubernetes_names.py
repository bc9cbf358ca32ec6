"""filter_plugins/inputs.py: the namespace names and label selectors the network policies are built from, and the
Secrets' values, refused before anything is written with a message that names the variable (the API server's rules,
apimachinery's validation)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_module

inputs = load_module("inputs", "filter_plugins")


def test_namespace_names_that_kubernetes_accepts_pass() -> None:
    assert inputs.namespace_name_problems({"v": ["monitoring", "ingress-nginx", "a", "x" * 63, "ns-1"]}) == []
    assert inputs.namespace_name_problems({"v": []}) == []


@pytest.mark.parametrize("name", ["Monitoring", "ingress_nginx", "-edge", "edge-", "x" * 64, "", "a.b", 7, None])
def test_a_name_that_is_not_a_namespace_name_is_refused_naming_the_variable(name: Any) -> None:
    (problem,) = inputs.namespace_name_problems({"namespace_api_ingress_namespaces": ["ok", name]})
    assert problem.startswith(f"namespace_api_ingress_namespaces: {name!r} is not a namespace name")


def test_a_namespace_list_that_is_not_a_list_is_refused() -> None:
    (problem,) = inputs.namespace_name_problems({"namespace_grafana_ingress_namespaces": "monitoring"})
    assert problem.startswith("namespace_grafana_ingress_namespaces must be a list")


@pytest.mark.parametrize("labels", [
    {"k8s-app": "kube-dns"}, {"app.kubernetes.io/name": "coredns"}, {"example.com/tier": ""},
    {"a": "A_b.c-9"}, {"x" * 63: "y" * 63},
])
def test_label_selectors_that_kubernetes_accepts_pass(labels: dict[str, Any]) -> None:
    assert inputs.label_problems({"namespace_dns_pod_labels": labels}) == []


@pytest.mark.parametrize(("labels", "expected"), [
    ({"k8s-app": "kube dns"}, "the value 'kube dns' of 'k8s-app' is not a label value"),
    ({"k8s-app": 1}, "the value 1 of 'k8s-app' is not a label value"),
    ({"k8s-app": True}, "the value True of 'k8s-app' is not a label value"),
    ({"k8s-app": "-dns"}, "the value '-dns' of 'k8s-app' is not a label value"),
    ({"k8s-app": "d" * 64}, "is not a label value"),
    ({"k8s app": "dns"}, "'k8s app' is not a label key"),
    ({"Example.com/app": "dns"}, "'Example.com/app' has a prefix that is not a DNS subdomain"),
    ({"a/b/c": "dns"}, "'a/b/c' is not a label key"),
    ({"example.com/": "dns"}, "'example.com/' is not a label key"),
])
def test_a_label_kubernetes_refuses_is_named_with_its_variable(labels: dict[str, Any], expected: str) -> None:
    (problem,) = inputs.label_problems({"namespace_dns_pod_labels": labels})
    assert problem.startswith("namespace_dns_pod_labels: ") and expected in problem


@pytest.mark.parametrize("labels", [{}, None, ["k8s-app=kube-dns"]])
def test_an_empty_or_malformed_selector_is_refused(labels: Any) -> None:
    (problem,) = inputs.label_problems({"namespace_dns_pod_labels": labels})
    assert problem.startswith("namespace_dns_pod_labels must be a mapping of at least one label")


def test_an_empty_or_unset_secret_is_named_and_its_neighbours_value_never_shown() -> None:
    problems = inputs.unset_secret_problems({"sapphire_exchange_api_key": "", "grafana_admin_password": "s3cret-value",
                                             "sapphire_exchange_api_secret": None})
    assert [problem.split(" is empty")[0] for problem in problems] == ["sapphire_exchange_api_key",
                                                                       "sapphire_exchange_api_secret"]
    assert not any("s3cret-value" in problem for problem in problems)
    assert inputs.unset_secret_problems({"grafana_admin_password": "s3cret-value"}) == []
