#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_backup_retention
short_description: Apply the backup retention by backup id, whole backups only
description:
  - Lists the backups under O(root)/<component>/ (directories named by their id, the UTC start
    time such as C(20261121T010203Z)) and decides, per component, which expire.
  - A backup is complete when it holds C(manifest.json) (backup.yml writes it last). A complete
    backup older than its component's retention expires; the newest complete backup of a component
    never does; a directory without a manifest is reported and never deleted.
  - With O(prune=true) the expired backups are deleted whole: each is first renamed out of the id
    namespace (C(.deleting-<id>)), then removed, so an interrupted run leaves nothing that looks like
    a backup; leftovers of an interrupted run are removed by the next run with O(prune=true).
  - The one retention of the toolkit; backup.yml and cleanup.yml both call it.
version_added: "1.1.0"
author: sapphire-ops
options:
  root:
    description: The backup root (backup_dir); components are its subdirectories.
    type: path
    required: true
  components:
    description: The components whose backups are considered.
    type: list
    elements: str
    required: true
  retention_days:
    description: Whole days to keep the backups of each component (at least 1), e.g. C({postgres: 30, redis: 7}).
    type: dict
    required: true
  prune:
    description: Delete the expired backups. Without it they are only reported.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would be deleted and deletes nothing.
  diff_mode:
    support: full
    description: The backup ids of each component before and after.
"""

EXAMPLES = r"""
- name: Apply the backup retention
  sapphire_backup_retention:
    root: /var/backups/sapphire
    components: [postgres, redis]
    retention_days: {postgres: 30, redis: 7}
    prune: true
"""

RETURN = r"""
backups:
  description: Every backup found, oldest first per component, with the decision.
  returned: always
  type: list
  elements: dict
  sample: [{component: redis, id: 20261101T000000Z, path: /b/redis/20261101T000000Z, complete: true,
            age_days: 33.1, action: expire, why: "33.1 days old, retention 7 days"}]
expired:
  description: Paths of the expired backups.
  returned: always
  type: list
  elements: str
deleted:
  description: Paths deleted by this run (expired backups and leftovers of an interrupted run); empty in check mode.
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sapphire_backups import as_dicts, delete_backup, list_backups, retention_plan


def bad_retention(components: list[str], retention_days: dict) -> str | None:
    for component in components:
        value = retention_days.get(component)
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
            return (f"retention_days.{component} must be a whole number of days >= 1 (got {value!r}); "
                    "set it in backup_retention_days")
    return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "components": {"type": "list", "elements": "str", "required": True},
            "retention_days": {"type": "dict", "required": True},
            "prune": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    problem = bad_retention(params["components"], params["retention_days"])
    if problem:
        module.fail_json(msg=problem)
    found, leftovers = list_backups(params["root"], params["components"])
    plan = retention_plan(found, time.time(), params["retention_days"])
    expired = [item.path for item in plan if item.action == "expire"]
    to_delete = expired + leftovers if params["prune"] else []
    result = {"changed": bool(to_delete), "backups": as_dicts(plan), "expired": expired, "deleted": []}
    if module._diff:
        before = {c: [i.id for i in plan if i.component == c] for c in params["components"]}
        after = {c: [i.id for i in plan if i.component == c and i.path not in to_delete] for c in params["components"]}
        result["diff"] = {"before": before, "after": after}
    if to_delete and not module.check_mode:
        for path in to_delete:
            try:
                delete_backup(path)
            except OSError as exc:
                module.fail_json(msg=f"could not delete {path}: {exc}", **result)
            result["deleted"].append(path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
