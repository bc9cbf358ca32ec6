#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_k8s_list
short_description: List several kinds of a namespace, or of the cluster, in one task, concurrently
description:
  - Lists the objects of every kind in O(kinds) in O(namespace) that match O(label_selectors), one list request per
    kind, concurrently over one connection pool, and returns them as one list with C(apiVersion) and C(kind) set on
    each (a list response leaves them out of its items).
  - It replaces one C(kubernetes.core.k8s_info) task per kind (one module process and one API client each) where a role
    reads what a namespace holds before applying what is missing or drifted.
  - A kind the API server does not serve fails the task, naming it; a namespace that does not exist yet lists nothing.
  - Read-only; runs in check mode.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.kubernetes
options:
  namespace:
    description: The namespace to list; omitted for cluster-scoped kinds (Node, StorageClass, PersistentVolume).
    type: str
  kinds:
    description:
      - The kinds to list, each C(api_version) and C(kind) (the output of the filter C(sapphire_kinds)), and optionally
        C(resource), the plural the API serves it under when it is not the kind in lower case with C(s) or C(ies).
      - With C(name) the entry reads that one object (label selectors aside); an object that does not exist lists
        nothing, so a role reads several single records (a pointer, a halt record) in one task too.
      - With C(namespace) the entry is read in that namespace instead of O(namespace); an empty C(namespace) reads a
        cluster-scoped kind (a Namespace, a PriorityClass) in the same task as namespaced ones.
    type: list
    elements: dict
    required: true
  label_selectors:
    description: Label selectors, all of which an object must match.
    type: list
    elements: str
    default: []
  field_selectors:
    description: Field selectors (C(spec.nodeName!=)), all of which an object must match.
    type: list
    elements: str
    default: []
  request_timeout:
    description: Seconds to wait for each list request.
    type: int
    default: 20
requirements:
  - kubernetes (the Python client) >= 24
"""

EXAMPLES = r"""
- name: Read the trading workloads the namespace holds
  sapphire_k8s_list:
    kubeconfig: "{{ k8s_kubeconfig }}"
    namespace: trading-system
    kinds: "{{ rendered | sapphire_kinds }}"
    label_selectors: [app.kubernetes.io/part-of=sapphire]
  register: existing
"""

RETURN = r"""
resources:
  description: Every listed object, kinds in the order given.
  type: list
  elements: dict
  returned: success
"""

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def plural(kind: str) -> str:
    """The resource name the API serves a kind under (Deployment -> deployments, NetworkPolicy -> networkpolicies)."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


def list_path(api_version: str, resource: str, namespace: str | None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{resource}" if namespace else f"{base}/{resource}"


def object_not_found(status: int, body: Any, name: str) -> bool:
    """Whether a 404 says the named object does not exist (a Status NotFound naming it), not an unserved kind."""
    if status != 404:
        return False
    try:
        answer = json.loads(body or b"{}")
    except (TypeError, ValueError):  # "404 page not found": no such resource
        return False
    return answer.get("reason") == "NotFound" and (answer.get("details") or {}).get("name") == name


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kubeconfig": {"type": "path"},
            "context": {"type": "str"},
            "namespace": {"type": "str"},
            "kinds": {"type": "list", "elements": "dict", "required": True},
            "label_selectors": {"type": "list", "elements": "str", "default": []},
            "field_selectors": {"type": "list", "elements": "str", "default": []},
            "request_timeout": {"type": "int", "default": 20},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        module.fail_json(msg="the kubernetes Python client is required (pip install kubernetes)")

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=params["kubeconfig"], context=params["context"],
                                client_configuration=configuration)
    except Exception as exc:  # a missing or broken kubeconfig
        module.fail_json(msg=f"cannot load the kubeconfig: {exc}")
    configuration.connection_pool_maxsize = 16
    api = client.ApiClient(configuration)
    query = [(name, ",".join(params[option])) for name, option in (("labelSelector", "label_selectors"),
                                                                    ("fieldSelector", "field_selectors"))
             if params[option]]

    def list_kind(item: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        api_version, kind, name = item.get("api_version") or "", item.get("kind") or "", item.get("name")
        namespace = item["namespace"] if "namespace" in item else params["namespace"]
        path = list_path(api_version, item.get("resource") or plural(kind), namespace or None)
        if name:
            path = f"{path}/{name}"
        try:
            response = api.call_api(path, "GET", query_params=[] if name else query, auth_settings=["BearerToken"],
                                    header_params={"Accept": "application/json"}, _preload_content=False,
                                    _return_http_data_only=True, _request_timeout=params["request_timeout"])
        except ApiException as exc:
            if name and object_not_found(exc.status, exc.body, name):
                return [], None
            # 404 otherwise: the API server does not serve the kind (a missing namespace lists nothing)
            return [], f"{kind} ({api_version}){' ' + name if name else ''}: {exc.status} {exc.reason}"
        except Exception as exc:  # refused, timed out, TLS
            return [], f"{kind} ({api_version}): cannot reach the API server ({type(exc).__name__}: {exc})"
        answer = json.loads(response.data or b"{}")
        items = [answer] if name else answer.get("items") or []
        return [{**obj, "apiVersion": api_version, "kind": kind} for obj in items], None

    kinds = params["kinds"]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(kinds)))) as pool:
        answers = list(pool.map(list_kind, kinds))
    errors = [error for _, error in answers if error]
    if errors:
        module.fail_json(msg="cannot list " + "; ".join(errors))
    module.exit_json(changed=False, resources=[obj for objects, _ in answers for obj in objects])


if __name__ == "__main__":
    main()
