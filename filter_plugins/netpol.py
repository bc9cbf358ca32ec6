"""A small evaluator of Kubernetes NetworkPolicies (networking.k8s.io/v1), for proving the platform's policies
without a network plugin (kwok runs none): given the policies, the namespaces' labels and a connection, is it
allowed?

The semantics are those of the API reference and the NetworkPolicy concept page:
- a pod is isolated for ingress (egress) when a policy of its namespace selects it and has Ingress (Egress) in its
  policyTypes; policyTypes defaults to [Ingress], plus Egress when the policy has an egress section;
- an isolated pod admits a connection that at least one rule of one selecting policy allows (policies add up);
- a rule without `from`/`to` admits every peer, without `ports` every port; the peers of a rule are ORed, a peer
  with podSelector and namespaceSelector needs both; podSelector alone means the policy's namespace;
- ipBlock peers match addresses outside the cluster (cidr, minus `except`);
- a port matches by number (with endPort, a range) or by the name of the destination's container port; the
  protocol defaults to TCP;
- a connection between two pods needs the source's egress and the destination's ingress.

Endpoints are dicts: a pod {"namespace": ..., "labels": {...}, "ports": {"http": 8000}} or an address outside the
cluster {"ip": "203.0.113.7"}. Filters: sapphire_netpol_allowed (one connection), sapphire_netpol_matrix (each
connection of a list, with its verdict), sapphire_ip_blocks (the ipBlock peers the namespace role renders).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError

KIND = "NetworkPolicy"


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector against labels: matchLabels and matchExpressions ANDed; an empty selector matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise AnsibleFilterError(f"unknown label selector operator {operator!r}")
    return True


def policy_types(spec: dict[str, Any]) -> list[str]:
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _namespace_of(policy: dict[str, Any]) -> str:
    return (policy.get("metadata") or {}).get("namespace") or "default"


def _is_pod(endpoint: dict[str, Any]) -> bool:
    return "ip" not in endpoint


def peer_matches(peer: dict[str, Any], policy_namespace: str, endpoint: dict[str, Any],
                 namespaces: dict[str, dict[str, str]]) -> bool:
    """One NetworkPolicyPeer against the other end of the connection."""
    if "ipBlock" in peer:
        if _is_pod(endpoint):
            return False
        address = ipaddress.ip_address(endpoint["ip"])
        block = peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"], strict=False):
            return False
        return not any(address in ipaddress.ip_network(cidr, strict=False) for cidr in block.get("except") or [])
    if not _is_pod(endpoint):
        return False
    if "namespaceSelector" in peer:
        labels = namespaces.get(endpoint["namespace"], {"kubernetes.io/metadata.name": endpoint["namespace"]})
        if not selector_matches(peer["namespaceSelector"], labels):
            return False
    elif endpoint["namespace"] != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), endpoint.get("labels") or {})


def port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str, destination: dict[str, Any]) -> bool:
    if not ports:
        return True
    for item in ports:
        if (item.get("protocol") or "TCP") != protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            if (destination.get("ports") or {}).get(wanted) == port:
                return True
            continue
        low = int(wanted)
        if low <= port <= int(item.get("endPort") or low):
            return True
    return False


def _side_allows(direction: str, policies: list[dict[str, Any]], subject: dict[str, Any], other: dict[str, Any],
                 port: int, protocol: str, destination: dict[str, Any],
                 namespaces: dict[str, dict[str, str]]) -> tuple[bool, list[str]]:
    """Whether subject (a pod) lets the connection through in direction Ingress or Egress, and the policies that did."""
    if not _is_pod(subject):
        return True, []
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated = False
    admitting: list[str] = []
    for policy in policies:
        if policy.get("kind", KIND) != KIND or _namespace_of(policy) != subject["namespace"]:
            continue
        spec = policy.get("spec") or {}
        if direction not in policy_types(spec) or not selector_matches(spec.get("podSelector"),
                                                                      subject.get("labels") or {}):
            continue
        isolated = True
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            if peers and not any(peer_matches(peer, subject["namespace"], other, namespaces) for peer in peers):
                continue
            if port_matches(rule.get("ports"), port, protocol, destination):
                admitting.append((policy.get("metadata") or {}).get("name", "?"))
                break
    return (not isolated or bool(admitting)), admitting


def allowed(policies: list[dict[str, Any]], source: dict[str, Any], destination: dict[str, Any], port: int,
            protocol: str = "TCP", namespaces: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The verdict on one connection: {allowed, egress, ingress, egress_policies, ingress_policies}."""
    namespaces = namespaces or {}
    port = int(port)
    egress, egress_by = _side_allows("Egress", policies, source, destination, port, protocol, destination, namespaces)
    ingress, ingress_by = _side_allows("Ingress", policies, destination, source, port, protocol, destination,
                                       namespaces)
    return {"allowed": egress and ingress, "egress": egress, "ingress": ingress,
            "egress_policies": egress_by, "ingress_policies": ingress_by}


def matrix(policies: list[dict[str, Any]], connections: list[dict[str, Any]],
           namespaces: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Each connection {source, destination, port, protocol?, ...} with its verdict merged in."""
    return [{**item, **allowed(policies, item["source"], item["destination"], item["port"],
                               item.get("protocol", "TCP"), namespaces)} for item in connections]


def ip_blocks(cidrs: list[str], excepted: list[str] | None = None, variable: str = "cidrs",
              except_variable: str = "except") -> list[dict[str, Any]]:
    """NetworkPolicy peers {ipBlock: {cidr, except}} for a list of CIDRs. Each block keeps only the excepted ranges
    inside it (the API server refuses an except outside its cidr, so 0.0.0.0/0 minus the private networks works and
    203.0.113.0/24 gets none). A value that is not a CIDR raises an error that names its variable."""
    def network(value: Any, name: str) -> Any:
        try:
            return ipaddress.ip_network(str(value), strict=False)
        except ValueError as exc:
            raise AnsibleFilterError(f"{name}: {value!r} is not a CIDR (for example 203.0.113.0/24): {exc}") from exc

    if not isinstance(cidrs, list) or not isinstance(excepted or [], list):
        raise AnsibleFilterError(f"{variable} and {except_variable} must be lists of CIDRs")
    excluded = [network(value, except_variable) for value in excepted or []]
    blocks = []
    for value in cidrs:
        block = network(value, variable)
        inside = [str(item) for item in excluded
                  if item.version == block.version and item != block and item.subnet_of(block)]
        blocks.append({"ipBlock": {"cidr": str(block), **({"except": inside} if inside else {})}})
    return blocks


def policies_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The NetworkPolicies of a list of objects (e.g. the namespace role's rendered list)."""
    return [item for item in objects if item.get("kind") == KIND]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_netpol_allowed": lambda policies, source, destination, port, protocol="TCP", namespaces=None:
                allowed(policies_of(policies), source, destination, port, protocol, namespaces),
            "sapphire_netpol_matrix": lambda policies, connections, namespaces=None:
                matrix(policies_of(policies), connections, namespaces),
            "sapphire_ip_blocks": ip_blocks,
        }
