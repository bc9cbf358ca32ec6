"""library/sapphire_rds_promote.py: which source a replica follows, and what is read back."""

from __future__ import annotations

from pathlib import Path

from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
module = load_module("sapphire_rds_promote")

ARN = "arn:aws:rds:us-east-1:123456789012:db:sapphire-east"


def test_a_source_matches_by_identifier_or_arn() -> None:
    assert module.follows(ARN, "sapphire-east")
    assert module.follows(ARN, ARN)
    assert module.follows("sapphire-east", ARN)
    assert module.follows(ARN, "")  # no expectation


def test_another_source_does_not_match() -> None:
    assert not module.follows(ARN, "sapphire-east-2")
    assert not module.follows("arn:aws:rds:us-east-1:123456789012:db:other", "sapphire-east")


def test_the_summary_of_a_promoted_instance_has_no_source() -> None:
    promoted = module.summary({"DBInstanceIdentifier": "w", "DBInstanceStatus": "available",
                               "Endpoint": {"Address": "w.example", "Port": 5432}})
    assert promoted == {"identifier": "w", "status": "available", "source": "", "address": "w.example", "port": 5432}
    replica = module.summary({"DBInstanceIdentifier": "w", "ReadReplicaSourceDBInstanceIdentifier": ARN})
    assert replica["source"] == ARN and replica["port"] == 0
