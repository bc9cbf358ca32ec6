#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_rds_promote
short_description: Promote an RDS read replica to a standalone instance, and prove it by reading it back
description:
  - Calls RDS C(PromoteReadReplica) for a read replica and waits until the instance, read back,
    no longer names a replication source and is C(available).
  - The postgres role tries amazon.aws.rds_instance (C(read_replica=false)) first; that module
    promotes only when the instance reports C(StatusInfos), and otherwise reports changed=False
    and does nothing. This module is the fallback the role calls when the instance it reads back
    is still a replica.
  - An instance that is not a replica is left alone (changed=False). Under check mode nothing is
    called; the result says whether a promotion would happen.
version_added: "1.0.0"
author: sapphire-ops
options:
  db_instance_identifier:
    description: The read replica to promote.
    type: str
    required: true
  expected_source:
    description:
      - The source the replica must follow (identifier or ARN; empty accepts any). A replica of
        something else is refused, so a typo never promotes the wrong instance.
    type: str
    default: ""
  backup_retention_period:
    description: Days of automated backups on the promoted instance (RDS keeps 1 when unset).
    type: int
    default: 7
  wait_timeout:
    description: Seconds to wait for the promoted instance to read back as standalone and available.
    type: int
    default: 1800
  wait_delay:
    description: Seconds between two reads while waiting.
    type: int
    default: 10
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Promote the DR region's replica
  sapphire_rds_promote:
    db_instance_identifier: sapphire-west
    expected_source: sapphire-east
    region: us-west-2
"""

RETURN = r"""
promoted:
  description: Whether this run promoted the instance (or would, under check mode).
  type: bool
  returned: always
instance:
  description: The instance as read back at the end.
  type: dict
  returned: always
  contains:
    identifier: {description: DBInstanceIdentifier, type: str}
    status: {description: DBInstanceStatus, type: str}
    source: {description: ReadReplicaSourceDBInstanceIdentifier (empty once standalone), type: str}
    address: {description: Endpoint address, type: str}
    port: {description: Endpoint port, type: int}
"""

import time
from typing import Any

try:
    import botocore
except ImportError:  # AnsibleAWSModule reports the missing library
    pass

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def summary(instance: dict[str, Any]) -> dict[str, Any]:
    endpoint = instance.get("Endpoint") or {}
    return {"identifier": instance.get("DBInstanceIdentifier", ""), "status": instance.get("DBInstanceStatus", ""),
            "source": instance.get("ReadReplicaSourceDBInstanceIdentifier") or "",
            "address": endpoint.get("Address", ""), "port": int(endpoint.get("Port") or 0)}


def follows(source: str, expected: str) -> bool:
    """Whether a replication source (identifier or ARN) names the expected instance (identifier or ARN)."""
    if not expected:
        return True
    return source == expected or source.rsplit(":", 1)[-1] == expected.rsplit(":", 1)[-1]


def describe(client: Any, identifier: str) -> dict[str, Any] | None:
    try:
        found = client.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "DBInstanceNotFound":
            return None
        raise
    return found[0] if found else None


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "db_instance_identifier": {"type": "str", "required": True},
            "expected_source": {"type": "str", "default": ""},
            "backup_retention_period": {"type": "int", "default": 7},
            "wait_timeout": {"type": "int", "default": 1800},
            "wait_delay": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    identifier = module.params["db_instance_identifier"]
    client = module.client("rds")
    try:
        instance = describe(client, identifier)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg=f"cannot read RDS instance {identifier}")
    if instance is None:
        module.fail_json(msg=f"RDS instance {identifier} does not exist in {module.region}")
    before = summary(instance)
    if not before["source"]:
        module.exit_json(changed=False, promoted=False, instance=before,
                         msg=f"{identifier} is not a read replica: nothing to promote")
    if not follows(before["source"], module.params["expected_source"]):
        module.fail_json(msg=f"{identifier} replicates {before['source']}, not {module.params['expected_source']}: "
                             "refusing to promote it", instance=before)
    if module.check_mode:
        module.exit_json(changed=True, promoted=True, instance=before,
                         msg=f"{identifier} (replica of {before['source']}) would be promoted")
    try:
        client.promote_read_replica(DBInstanceIdentifier=identifier,
                                    BackupRetentionPeriod=module.params["backup_retention_period"])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg=f"PromoteReadReplica of {identifier} failed")
    deadline = time.monotonic() + module.params["wait_timeout"]
    while True:
        after = summary(describe(client, identifier) or {})
        if not after["source"] and after["status"] == "available":
            module.exit_json(changed=True, promoted=True, instance=after,
                             msg=f"{identifier} promoted (was a replica of {before['source']})")
        if time.monotonic() >= deadline:
            module.fail_json(msg=f"{identifier} did not read back as a standalone available instance within "
                                 f"{module.params['wait_timeout']} s", instance=after)
        time.sleep(module.params["wait_delay"])


if __name__ == "__main__":
    main()
