#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_s3_bucket_check
short_description: Read the settings of S3 buckets and name the buckets that differ from what is wanted
description:
  - Reads, for each bucket of O(buckets), its versioning, default encryption, object lock configuration, public access
    block and lifecycle rules (five GET requests, nothing written), and names the buckets that are missing or whose
    settings differ from the options given.
  - The backup_store role runs C(amazon.aws.s3_bucket) only for the buckets in RV(unconverged) and
    C(community.aws.s3_lifecycle) only for those in RV(lifecycle_unconverged); on a converged object store that is one
    task run instead of four module runs per bucket.
  - A setting the server has no configuration for (no encryption, no lifecycle) is a difference; any other error (access
    denied, an unreachable endpoint) fails the task, naming the bucket and the request.
  - Read-only; runs in check mode.
version_added: "1.0.0"
author: sapphire-ops
options:
  buckets:
    description: The names of the buckets.
    type: list
    elements: str
    required: true
  versioning:
    description: Whether versioning must be enabled.
    type: bool
    default: true
  encryption:
    description: The default server-side encryption algorithm (C(AES256), C(aws:kms)).
    type: str
    default: AES256
  object_lock_default_retention:
    description: The default retention (C(mode), C(days)) object lock must apply; omitted when none is wanted.
    type: dict
  public_access:
    description: The public access block flags, as C(amazon.aws.s3_bucket) takes them.
    type: dict
    default: {}
  lifecycle_rule:
    description: The lifecycle rule the bucket must have, as C(community.aws.s3_lifecycle) takes it.
    type: dict
    suboptions:
      rule_id: {description: The rule's ID., type: str, required: true}
      noncurrent_version_expiration_days: {description: Days before a non-current version is deleted., type: int}
      expire_object_delete_marker: {description: Whether delete markers without versions are removed., type: bool}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read each region's bucket settings
  sapphire_s3_bucket_check:
    endpoint_url: https://127.0.0.1:17443
    buckets: [sapphire-backups-primary, sapphire-backups-dr]
    object_lock_default_retention: {mode: GOVERNANCE, days: 1}
    lifecycle_rule: {rule_id: purge-pruned-backups, noncurrent_version_expiration_days: 1}
  register: bucket_check
"""

RETURN = r"""
unconverged:
  description: The buckets that are missing or differ in versioning, encryption, object lock or public access block.
  type: list
  elements: str
  returned: always
lifecycle_unconverged:
  description: The buckets whose lifecycle rule is missing or differs.
  type: list
  elements: str
  returned: always
differences:
  description: For each bucket that differs, what differs (C(missing), C(versioning), C(encryption), C(object_lock),
    C(public_access), C(lifecycle)).
  type: dict
  returned: always
"""

from collections.abc import Callable
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    import botocore
except ImportError:  # AnsibleAWSModule reports the missing library
    pass

# What the server answers when a bucket has no such configuration: a difference, not an error.
NOT_CONFIGURED = {"NoSuchBucket", "ServerSideEncryptionConfigurationNotFoundError", "NoSuchLifecycleConfiguration",
                  "NoSuchPublicAccessBlockConfiguration", "ObjectLockConfigurationNotFoundError",
                  "NoSuchObjectLockConfiguration"}
PUBLIC_ACCESS_FLAGS = {"block_public_acls": "BlockPublicAcls", "ignore_public_acls": "IgnorePublicAcls",
                       "block_public_policy": "BlockPublicPolicy", "restrict_public_buckets": "RestrictPublicBuckets"}


def differences(read: Callable[[str], dict[str, Any] | None], params: dict[str, Any]) -> list[str]:
    """What differs in one bucket; read(request) is the answer to a GET request, None when it is not configured."""
    if read("get_bucket_versioning") is None:
        return ["missing"]
    found = []
    if params["versioning"] and (read("get_bucket_versioning") or {}).get("Status") != "Enabled":
        found.append("versioning")
    rules = ((read("get_bucket_encryption") or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []
    algorithms = [(rule.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for rule in rules]
    if params["encryption"] and algorithms != [params["encryption"]]:
        found.append("encryption")
    retention = params["object_lock_default_retention"]
    if retention:
        lock = (read("get_object_lock_configuration") or {}).get("ObjectLockConfiguration") or {}
        current = (lock.get("Rule") or {}).get("DefaultRetention") or {}
        if (lock.get("ObjectLockEnabled") != "Enabled" or current.get("Mode") != retention.get("mode")
                or current.get("Days") != int(retention.get("days") or 0)):
            found.append("object_lock")
    if params["public_access"]:
        block = (read("get_public_access_block") or {}).get("PublicAccessBlockConfiguration") or {}
        if any(bool(block.get(key)) != bool(params["public_access"].get(option))
               for option, key in PUBLIC_ACCESS_FLAGS.items() if option in params["public_access"]):
            found.append("public_access")
    rule = params["lifecycle_rule"]
    if rule:
        current = next((item for item in (read("get_bucket_lifecycle_configuration") or {}).get("Rules") or []
                        if item.get("ID") == rule["rule_id"]), None)
        if (current is None or current.get("Status") != "Enabled"
                or (rule.get("noncurrent_version_expiration_days") is not None
                    and (current.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
                    != rule["noncurrent_version_expiration_days"])
                or (rule.get("expire_object_delete_marker") is not None
                    and bool((current.get("Expiration") or {}).get("ExpiredObjectDeleteMarker"))
                    != rule["expire_object_delete_marker"])):
            found.append("lifecycle")
    return found


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "buckets": {"type": "list", "elements": "str", "required": True},
            "versioning": {"type": "bool", "default": True},
            "encryption": {"type": "str", "default": "AES256"},
            "object_lock_default_retention": {"type": "dict"},
            "public_access": {"type": "dict", "default": {}},
            "lifecycle_rule": {"type": "dict", "options": {
                "rule_id": {"type": "str", "required": True},
                "noncurrent_version_expiration_days": {"type": "int"},
                "expire_object_delete_marker": {"type": "bool"},
            }},
        },
        supports_check_mode=True,
    )
    s3 = module.client("s3")
    found: dict[str, list[str]] = {}
    for bucket in module.params["buckets"]:
        answers: dict[str, dict[str, Any] | None] = {}

        def read(request: str, bucket: str = bucket, answers: dict = answers) -> dict[str, Any] | None:
            if request not in answers:
                try:
                    answers[request] = getattr(s3, request)(Bucket=bucket)
                except botocore.exceptions.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in NOT_CONFIGURED:
                        module.fail_json_aws(exc, msg=f"cannot read {request} of bucket {bucket}")
                    answers[request] = None
                except botocore.exceptions.BotoCoreError as exc:
                    module.fail_json_aws(exc, msg=f"cannot read {request} of bucket {bucket}")
            return answers[request]

        differing = differences(read, module.params)
        if differing:
            found[bucket] = differing
    module.exit_json(
        changed=False, differences=found,
        unconverged=[name for name, what in found.items() if set(what) - {"lifecycle"}],
        lifecycle_unconverged=[name for name, what in found.items() if {"missing", "lifecycle"} & set(what)],
    )


if __name__ == "__main__":
    main()
