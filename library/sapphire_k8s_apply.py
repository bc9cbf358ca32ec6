#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_k8s_apply
short_description: Apply Kubernetes objects server-side, only those missing or drifted
description:
  - Reads each object of O(definition) by name (one request per object, concurrently, with C(sapphire_k8s_list)),
    compares it with what the cluster holds, and applies only the objects that are missing or whose fields differ, in
    one server-side apply with C(kubernetes.core.k8s). A converged cluster costs one read per object and no write, and
    the task reports changed only when an object was applied.
  - Compared are the fields the definition sets (status and the fields the API server adds aside). Each object but a
    Secret is annotated with C(sapphire.io/applied-hash), a digest of its definition, so a field the definition stops
    setting is noticed too. A Secret is compared by its data, and carries no digest of it.
  - An object without C(metadata.namespace) is read as cluster-scoped (a Namespace, a PriorityClass), so give every
    namespaced object its namespace.
  - Runs as an action plugin (action_plugins/sapphire_k8s_apply.py) that composes the two modules; check mode and diff
    are those of C(kubernetes.core.k8s). With C(no_log) on the task nothing of the objects is shown.
version_added: "1.0.0"
author: sapphire-ops
extends_documentation_fragment:
  - sapphire.kubernetes
options:
  definition:
    description: The objects, each with C(apiVersion), C(kind) and C(metadata.name).
    type: list
    elements: dict
    required: true
  field_manager:
    description: The field manager of the server-side apply (conflicts are forced).
    type: str
    default: sapphire-ops
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff of C(kubernetes.core.k8s) for the objects applied.
  action:
    support: full
requirements:
  - kubernetes (the Python client) >= 24
"""

EXAMPLES = r"""
- name: Apply the namespace and what the workloads rely on
  sapphire_k8s_apply:
    kubeconfig: "{{ k8s_kubeconfig }}"
    context: "{{ k8s_context }}"
    definition: "{{ lookup('ansible.builtin.template', 'namespace.yml.j2') | from_json }}"
"""

RETURN = r"""
drifted:
  description: The objects that were missing or drifted, and were applied, as C(Kind/namespace/name).
  returned: always
  type: list
  elements: str
result:
  description: What C(kubernetes.core.k8s) returned for the objects applied.
  returned: when an object was applied
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={
        "kubeconfig": {"type": "path"},
        "context": {"type": "str"},
        "definition": {"type": "list", "elements": "dict", "required": True},
        "field_manager": {"type": "str", "default": "sapphire-ops"},
    }, supports_check_mode=True)
    module.fail_json(msg="sapphire_k8s_apply runs on the controller through its action plugin; "
                         "check that action_plugins in ansible.cfg points at action_plugins/")


if __name__ == "__main__":
    main()
