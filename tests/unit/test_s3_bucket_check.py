"""library/sapphire_s3_bucket_check.py: what makes a bucket differ from the settings the backup_store role wants. The
read against a real S3 server, and the repair of only what differs: tests/integration/test_backup_restore.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import load_module

module = load_module("sapphire_s3_bucket_check")

WANTED = {
    "versioning": True, "encryption": "AES256",
    "object_lock_default_retention": {"mode": "GOVERNANCE", "days": 1},
    "public_access": {"block_public_acls": True, "ignore_public_acls": True, "block_public_policy": True,
                      "restrict_public_buckets": True},
    "lifecycle_rule": {"rule_id": "purge-pruned-backups", "noncurrent_version_expiration_days": 1,
                       "expire_object_delete_marker": True},
}
CONVERGED: dict[str, Any] = {  # what the S3 server answers for a bucket the role made
    "get_bucket_versioning": {"Status": "Enabled"},
    "get_bucket_encryption": {"ServerSideEncryptionConfiguration": {"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}]}},
    "get_object_lock_configuration": {"ObjectLockConfiguration": {
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}},
    "get_public_access_block": {"PublicAccessBlockConfiguration": {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}},
    "get_bucket_lifecycle_configuration": {"Rules": [
        {"ID": "other-rule", "Status": "Enabled"},
        {"Expiration": {"ExpiredObjectDeleteMarker": True}, "ID": "purge-pruned-backups", "Filter": {"Prefix": ""},
         "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]},
}


def differences(answers: dict[str, Any], wanted: dict[str, Any] = WANTED) -> list[str]:
    return module.differences(lambda request: answers.get(request), wanted)


def changed(path: list[Any], value: Any) -> dict[str, Any]:
    answers = copy.deepcopy(CONVERGED)
    target = answers
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return answers


def test_a_converged_bucket_differs_in_nothing() -> None:
    assert differences(CONVERGED) == []


def test_a_missing_bucket_is_only_missing() -> None:
    assert differences({}) == ["missing"]


@pytest.mark.parametrize(("path", "value", "what"), [
    (["get_bucket_versioning", "Status"], "Suspended", "versioning"),
    (["get_bucket_encryption"], None, "encryption"),
    (["get_bucket_encryption", "ServerSideEncryptionConfiguration", "Rules", 0, "ApplyServerSideEncryptionByDefault",
      "SSEAlgorithm"], "aws:kms", "encryption"),
    (["get_object_lock_configuration", "ObjectLockConfiguration", "Rule", "DefaultRetention", "Days"], 30,
     "object_lock"),
    (["get_object_lock_configuration", "ObjectLockConfiguration", "Rule", "DefaultRetention", "Mode"], "COMPLIANCE",
     "object_lock"),
    (["get_object_lock_configuration"], None, "object_lock"),
    (["get_public_access_block", "PublicAccessBlockConfiguration", "BlockPublicPolicy"], False, "public_access"),
    (["get_bucket_lifecycle_configuration"], None, "lifecycle"),
    (["get_bucket_lifecycle_configuration", "Rules", 1, "Status"], "Disabled", "lifecycle"),
    (["get_bucket_lifecycle_configuration", "Rules", 1, "NoncurrentVersionExpiration", "NoncurrentDays"], 30,
     "lifecycle"),
    (["get_bucket_lifecycle_configuration", "Rules", 1, "Expiration"], {}, "lifecycle"),
])
def test_each_setting_that_changed_is_named(path: list[Any], value: Any, what: str) -> None:
    assert differences(changed(path, value)) == [what]


def test_a_retention_not_wanted_is_not_checked() -> None:
    wanted = {**WANTED, "object_lock_default_retention": {}}
    assert differences(changed(["get_object_lock_configuration"], None), wanted) == []
