"""The NetworkPolicy evaluator (filter_plugins/netpol.py) against the examples of the Kubernetes documentation
(concepts/services-networking/network-policies), each with what the page says it allows and denies."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_module

netpol = load_module("netpol", "filter_plugins")


def pod(namespace: str, **labels: str) -> dict[str, Any]:
    return {"namespace": namespace, "labels": labels}


def outside(ip: str) -> dict[str, Any]:
    return {"ip": ip}


def policy(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


NAMESPACES = {"default": {"kubernetes.io/metadata.name": "default"},
              "myproject": {"kubernetes.io/metadata.name": "myproject", "project": "myproject"},
              "other": {"kubernetes.io/metadata.name": "other"}}

# The page's first example, "test-network-policy".
TEST_NETWORK_POLICY = policy("test-network-policy", {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                          {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                          {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                 "ports": [{"protocol": "TCP", "port": 6379}]}],
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}],
})
DB = pod("default", role="db")


def verdict(policies: list[dict[str, Any]], source: dict[str, Any], destination: dict[str, Any], port: int,
            protocol: str = "TCP") -> bool:
    return netpol.allowed(policies, source, destination, port, protocol, NAMESPACES)["allowed"]


@pytest.mark.parametrize(("source", "port", "expected"), [
    (pod("default", role="frontend"), 6379, True),  # podSelector: role=frontend in the policy's namespace
    (pod("other", role="frontend"), 6379, False),  # ... but not in another namespace
    (pod("myproject", app="anything"), 6379, True),  # any pod of a namespace labelled project=myproject
    (outside("172.17.0.5"), 6379, True),  # the ipBlock ...
    (outside("172.17.1.5"), 6379, False),  # ... minus its except
    (outside("192.168.0.1"), 6379, False),
    (pod("default", role="frontend"), 5432, False),  # only TCP 6379
])
def test_the_documented_ingress_of_test_network_policy(source: dict[str, Any], port: int, expected: bool) -> None:
    assert verdict([TEST_NETWORK_POLICY], source, DB, port) is expected


def test_the_documented_egress_of_test_network_policy() -> None:
    assert verdict([TEST_NETWORK_POLICY], DB, outside("10.0.0.7"), 5978)
    assert not verdict([TEST_NETWORK_POLICY], DB, outside("10.0.1.7"), 5978)
    assert not verdict([TEST_NETWORK_POLICY], DB, outside("10.0.0.7"), 443)
    assert not verdict([TEST_NETWORK_POLICY], DB, outside("10.0.0.7"), 5978, "UDP")
    # A pod the policy does not select is not isolated.
    assert verdict([TEST_NETWORK_POLICY], pod("default", role="web"), outside("8.8.8.8"), 443)


def test_and_versus_or_of_namespace_and_pod_selectors() -> None:
    # One element with both selectors: pods labelled role=client in namespaces labelled user=alice.
    both = policy("and", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"user": "alice"}},
         "podSelector": {"matchLabels": {"role": "client"}}}]}]})
    # Two elements: any pod of those namespaces, or role=client pods of the policy's own namespace.
    either = policy("or", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"user": "alice"}}},
        {"podSelector": {"matchLabels": {"role": "client"}}}]}]})
    namespaces = {**NAMESPACES, "alice": {"kubernetes.io/metadata.name": "alice", "user": "alice"}}
    target = pod("default", app="api")
    cases = [(pod("alice", role="client"), True, True), (pod("alice", role="server"), False, True),
             (pod("default", role="client"), False, True), (pod("other", role="client"), False, False)]
    for source, with_both, with_either in cases:
        assert netpol.allowed([both], source, target, 80, namespaces=namespaces)["allowed"] is with_both, source
        assert netpol.allowed([either], source, target, 80, namespaces=namespaces)["allowed"] is with_either, source


def test_the_documented_defaults() -> None:
    web, client = pod("default", app="web"), pod("default", app="client")
    deny_ingress = policy("default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    allow_ingress = policy("allow-all-ingress", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]})
    deny_egress = policy("default-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    allow_egress = policy("allow-all-egress", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})
    deny_all = policy("default-deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert verdict([], client, web, 80)  # nothing selects a pod: not isolated
    assert not verdict([deny_ingress], client, web, 80)
    assert verdict([deny_ingress], client, outside("1.1.1.1"), 443)  # ingress isolation leaves egress open
    assert verdict([deny_ingress, allow_ingress], client, web, 80)  # policies add up
    assert not verdict([deny_egress], client, outside("1.1.1.1"), 443)
    assert verdict([deny_egress, allow_egress], client, outside("1.1.1.1"), 443)
    assert not verdict([deny_all], outside("1.1.1.1"), web, 80)
    assert not verdict([deny_all], web, outside("1.1.1.1"), 80)
    # A policy in another namespace isolates nothing here.
    assert verdict([policy("elsewhere", {"podSelector": {}, "policyTypes": ["Ingress"]}, "other")], client, web, 80)


def test_policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() -> None:
    assert netpol.policy_types({"podSelector": {}}) == ["Ingress"]
    assert netpol.policy_types({"podSelector": {}, "egress": []}) == ["Ingress", "Egress"]
    # An ingress-only policy without rules isolates for ingress but leaves egress alone.
    assert verdict([policy("p", {"podSelector": {}})], pod("default"), outside("1.1.1.1"), 443)


def test_a_port_range_with_end_port() -> None:
    ranged = policy("multi-port-egress", {
        "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                    "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]})
    assert verdict([ranged], DB, outside("10.0.0.1"), 32000)
    assert verdict([ranged], DB, outside("10.0.0.1"), 32768)
    assert not verdict([ranged], DB, outside("10.0.0.1"), 32769)
    assert not verdict([ranged], DB, outside("10.0.0.1"), 31999)


def test_a_namespace_by_name_and_a_named_port() -> None:
    by_name = policy("from-myproject", {"podSelector": {}, "ingress": [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "myproject"}}}],
        "ports": [{"port": "http"}]}]})
    api = {"namespace": "default", "labels": {"app": "api"}, "ports": {"http": 8080}}
    assert verdict([by_name], pod("myproject"), api, 8080)
    assert not verdict([by_name], pod("myproject"), api, 9090)  # not the port named http
    assert not verdict([by_name], pod("other"), api, 8080)


def test_match_expressions() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "canary", "operator": "DoesNotExist"},
                                     {"key": "env", "operator": "NotIn", "values": ["dev"]}]}
    assert netpol.selector_matches(selector, {"tier": "a"})
    assert netpol.selector_matches(selector, {"tier": "b", "env": "prod"})
    assert not netpol.selector_matches(selector, {"tier": "c"})
    assert not netpol.selector_matches(selector, {"tier": "a", "canary": "1"})
    assert not netpol.selector_matches(selector, {"tier": "a", "env": "dev"})
    assert netpol.selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"x": ""})


def test_a_connection_between_pods_needs_both_sides() -> None:
    # The source may send (its egress), but the destination does not admit it (its ingress), and the reverse.
    egress_only = [policy("out", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
                                  "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}),
                   policy("in", {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]})]
    result = netpol.allowed(egress_only, pod("default", app="a"), pod("default", app="b"), 80)
    assert result == {"allowed": False, "egress": True, "ingress": False, "egress_policies": ["out"],
                      "ingress_policies": []}


def test_the_matrix_filter_reads_the_policies_out_of_a_rendered_list() -> None:
    filters = netpol.FilterModule().filters()
    objects = [{"kind": "Namespace", "metadata": {"name": "default"}}, TEST_NETWORK_POLICY]
    rows = filters["sapphire_netpol_matrix"](objects, [
        {"name": "frontend to db", "source": pod("default", role="frontend"), "destination": DB, "port": 6379},
        {"name": "db to the internet", "source": DB, "destination": outside("8.8.8.8"), "port": 443}])
    assert [(row["name"], row["allowed"]) for row in rows] == [("frontend to db", True), ("db to the internet", False)]


def test_ip_blocks_keep_only_the_excepted_ranges_inside_each_block() -> None:
    # The API server refuses an except outside its cidr: 0.0.0.0/0 keeps the private networks out, a public range
    # gets no except at all.
    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert netpol.ip_blocks(["0.0.0.0/0", "203.0.113.0/24", "10.1.0.0/16"], private) == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": private}},
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
        {"ipBlock": {"cidr": "10.1.0.0/16"}}]  # inside 10.0.0.0/8, not the other way round
    assert netpol.ip_blocks(["10.0.0.0/8"], ["10.0.0.0/8", "10.9.0.0/16"]) == [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}}]  # not the block itself
    assert netpol.ip_blocks(["2001:db8::/32"], private) == [{"ipBlock": {"cidr": "2001:db8::/32"}}]
    assert netpol.ip_blocks([]) == []


@pytest.mark.parametrize(("cidrs", "excepted", "named"), [
    (["10.0.0.0/33"], [], "namespace_api_ingress_cidrs"),
    (["exchange.example.com"], [], "namespace_api_ingress_cidrs"),
    (["0.0.0.0/0"], ["not-a-range"], "namespace_exchange_egress_except"),
])
def test_a_value_that_is_not_a_cidr_is_refused_naming_its_variable(cidrs: list[str], excepted: list[str],
                                                                   named: str) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=f"^{named}: .* is not a CIDR"):
        netpol.ip_blocks(cidrs, excepted, "namespace_api_ingress_cidrs", "namespace_exchange_egress_except")
