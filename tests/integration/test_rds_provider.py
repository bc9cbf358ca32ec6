"""The postgres role's RDS provider (postgres_external_provider rds) against moto's server mode.

moto (PyPI moto[server], pinned in requirements-dev.txt) runs on a free loopback port for the module; two regions
(us-east-1 primary, us-west-2 its cross-region read replica), each with a VPC and a DB subnet group as RDS has.
- rds_promote: amazon.aws.rds_instance (read_replica: false) leaves a replica a replica when RDS reports no
  StatusInfos (moto never does: the known gap); the role reads the instance back, promotes it with
  PromoteReadReplica (library/sapphire_rds_promote.py) and proves it by reading it back; a second run changes
  nothing; --check changes nothing; a replica of another source and a missing instance are refused, naming the
  variable.
- rds_snapshot: a snapshot in us-east-1 copied into us-west-2, both read back as available.
- backup.yml with the PostgreSQL endpoints on RDS and a provider-managed Redis: the snapshot and its copy, the run
  saying what it did not back up.
"""

from __future__ import annotations

import json
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sapphire_testlib import PlaybookResult, run_playbook

boto3 = pytest.importorskip("boto3")

pytestmark = [pytest.mark.servers, pytest.mark.slow]

PLAYBOOK = "tests/integration/playbooks/postgres_entry_point.yml"
INVENTORY = "localhost,"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rds_promotes_like_aws() -> None:
    """moto 5.1.22's PromoteReadReplica marks the instance standalone internally but keeps reporting
    ReadReplicaSourceDBInstanceIdentifier, which real RDS removes on promotion (and which is what the role reads
    back). Make the fake do what RDS does; nothing of the role or the module is patched."""
    from moto.rds.models import RDSBackend

    original = RDSBackend.promote_read_replica

    def promote(self: Any, db_kwargs: dict[str, Any]) -> Any:
        database = original(self, db_kwargs)
        database.source_db_instance_identifier = None
        return database

    RDSBackend.promote_read_replica = promote


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """moto's server mode on a free loopback port, in this process (ThreadedMotoServer)."""
    server_module = pytest.importorskip("moto.moto_server.threaded_moto_server")
    rds_promotes_like_aws()
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def client(url: str, service: str, region: str) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=url, aws_access_key_id="testing",
                        aws_secret_access_key="testing-secret")


def subnet_group(url: str, region: str) -> None:
    ec2 = client(url, "ec2", region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{index}.0/24",
                                 AvailabilityZone=f"{region}{zone}")["Subnet"]["SubnetId"]
               for index, zone in ((1, "a"), (2, "b"))]
    client(url, "rds", region).create_db_subnet_group(DBSubnetGroupName="sapphire", DBSubnetGroupDescription="s",
                                                      SubnetIds=subnets)


def replica_pair(url: str) -> dict[str, str]:
    """sapphire-east-<id> in us-east-1 and its cross-region read replica sapphire-west-<id> in us-west-2."""
    suffix = uuid.uuid4().hex[:6]
    east, west = f"sapphire-east-{suffix}", f"sapphire-west-{suffix}"
    for region in ("us-east-1", "us-west-2"):
        subnet_group(url, region)
    rds_east = client(url, "rds", "us-east-1")
    rds_east.create_db_instance(DBInstanceIdentifier=east, Engine="postgres", DBInstanceClass="db.m5.large",
                                AllocatedStorage=20, MasterUsername="sapphire_admin",
                                MasterUserPassword=f"pw-{uuid.uuid4().hex}", BackupRetentionPeriod=7,
                                DBSubnetGroupName="sapphire")
    arn = rds_east.describe_db_instances(DBInstanceIdentifier=east)["DBInstances"][0]["DBInstanceArn"]
    client(url, "rds", "us-west-2").create_db_instance_read_replica(
        DBInstanceIdentifier=west, SourceDBInstanceIdentifier=arn, DBInstanceClass="db.m5.large",
        SourceRegion="us-east-1", DBSubnetGroupName="sapphire")
    return {"east": east, "west": west, "east_arn": arn, "url": url}


@pytest.fixture(scope="module")
def regions(moto: str) -> dict[str, str]:
    return replica_pair(moto)


def run(regions: dict[str, str], entry_point: str, check: bool = False, **variables: Any) -> PlaybookResult:
    extra = {"postgres_entry_point": entry_point, "sapphire_aws_endpoint_url": regions["url"],
             "postgres_rds_wait_timeout": 60, "ansible_python_interpreter": sys.executable, **variables}
    return run_playbook(PLAYBOOK, INVENTORY, extra_vars=extra, check=check,
                        env={**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}, timeout=600)


def recorded(result: PlaybookResult) -> dict[str, Any]:
    """What the entry point recorded (postgres_rds_promotion, postgres_rds_snapshot)."""
    shown = result.task_results("Show what it recorded").get("localhost")
    assert shown, f"the playbook did not get to the end:\n{result.explain()}"
    return json.loads(shown["msg"])


def messages(result: PlaybookResult) -> str:
    return " ".join(" ".join(result.failure_messages()).split())


def source_of(regions: dict[str, str], name: str, region: str) -> str:
    instance = client(regions["url"], "rds", region).describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    return instance.get("ReadReplicaSourceDBInstanceIdentifier") or ""


def west_vars(regions: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"postgres_rds_instance": regions["west"], "postgres_rds_region": "us-west-2", **more}


def test_a_replica_of_another_source_is_refused_naming_the_variable(regions: dict[str, str]) -> None:
    result = run(regions, "rds_promote", **west_vars(regions, postgres_rds_source="sapphire-elsewhere"))
    assert result.rc != 0
    assert "(postgres_rds_source): refusing to promote it" in messages(result), result.explain()
    assert result.changed == 0
    assert source_of(regions, regions["west"], "us-west-2") == regions["east_arn"]


def test_a_missing_instance_is_refused_naming_the_variable(regions: dict[str, str]) -> None:
    result = run(regions, "rds_promote", postgres_rds_instance="sapphire-nowhere", postgres_rds_region="us-west-2")
    assert result.rc != 0
    assert "sapphire-nowhere (postgres_rds_instance) does not exist" in messages(result), result.explain()


def test_check_mode_says_it_would_promote_and_promotes_nothing(regions: dict[str, str]) -> None:
    result = run(regions, "rds_promote", check=True, **west_vars(regions, postgres_rds_source=regions["east"]))
    assert result.rc == 0, result.explain()
    promotion = recorded(result)["promotion"]
    assert promotion["by"].startswith("sapphire_rds_promote") and promotion["source_now"], promotion
    assert result.changed_tasks() == [
        "postgres : Promote it with PromoteReadReplica where the collection's module left it a replica"]
    assert source_of(regions, regions["west"], "us-west-2") == regions["east_arn"]


def test_the_replica_is_promoted_despite_the_collections_gap_and_read_back(regions: dict[str, str]) -> None:
    result = run(regions, "rds_promote", **west_vars(regions, postgres_rds_source=regions["east_arn"]))
    assert result.rc == 0, result.explain()
    promotion = recorded(result)["promotion"]
    # The collection's module did nothing (no StatusInfos); the fallback promoted, and the read-back proves it.
    assert promotion["by"].startswith("sapphire_rds_promote"), promotion
    assert promotion["was_replica_of"] == regions["east_arn"] and promotion["source_now"] == "", promotion
    assert promotion["status"] == "available" and promotion["address"].startswith(regions["west"]), promotion
    assert source_of(regions, regions["west"], "us-west-2") == ""

    again = run(regions, "rds_promote", **west_vars(regions))
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
    assert recorded(again)["promotion"]["by"] == "nothing (already standalone)"


def test_a_snapshot_is_copied_into_the_other_region_and_read_back(regions: dict[str, str]) -> None:
    result = run(regions, "rds_snapshot", postgres_rds_instance=regions["east"], postgres_rds_region="us-east-1",
                 postgres_rds_snapshot_copy_region="us-west-2")
    assert result.rc == 0, result.explain()
    snapshot = recorded(result)["snapshot"]
    assert snapshot["status"] == "available" and snapshot["copy_status"] == "available", snapshot
    assert ":us-west-2:" in snapshot["copy_arn"] and ":us-east-1:" in snapshot["arn"], snapshot
    west = client(regions["url"], "rds", "us-west-2").describe_db_snapshots(DBSnapshotIdentifier=snapshot["id"])
    assert west["DBSnapshots"][0]["Status"] == "available"


def test_backup_yml_snapshots_rds_and_says_a_provider_managed_redis_is_not_backed_up(
        regions: dict[str, str], throwaway_redis: Any, tmp_path: Path) -> None:
    """backup.yml -i <prod-like inventory>: PostgreSQL on RDS (endpoints per region, the live one in us-east-1), Redis
    on ElastiCache (here a throw-away Redis stands for it): the RDS instance is snapshotted and the snapshot copied
    into the other region, the manifest names it, the last success is recorded in the live Redis; the Redis is not
    backed up by the toolkit and the run says so instead of failing every hour. The object store is moto's S3 (an
    external store, as AWS S3 would be): the manifest goes into both regions' buckets."""
    buckets = {"primary": f"rds-east-{uuid.uuid4().hex[:8]}", "dr": f"rds-west-{uuid.uuid4().hex[:8]}"}
    s3 = client(regions["url"], "s3", "us-east-1")
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "postgres_endpoints": {"hosts": {
            "pg-east": {"sapphire_region": "primary", "postgres_replication_role": "primary",
                        "postgres_external_host": f"{regions['east']}.rds.example",
                        "postgres_rds_instance": regions["east"],
                        "postgres_rds_region": "us-east-1", "postgres_rds_snapshot_copy_region": "us-west-2"},
            "pg-west": {"sapphire_region": "dr", "postgres_replication_role": "standby",
                        "postgres_external_host": f"{regions['west']}.rds.example",
                        "postgres_rds_instance": regions["west"],
                        "postgres_rds_region": "us-west-2", "postgres_rds_snapshot_copy_region": "us-east-1"}}},
        "redis_endpoints": {"hosts": {
            "redis-east": {"sapphire_region": "primary", "redis_replication_role": "primary",
                           "redis_external_host": "127.0.0.1", "redis_external_port": throwaway_redis.port}}},
    }, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "sapphire_environment": "test",
        "sapphire_state_store": "file", "sapphire_local_dir": str(tmp_path / "local"),
        "postgres_mode": "external", "redis_mode": "external", "postgres_external_provider": "rds",
        "redis_external_provider": "elasticache", "redis_password": throwaway_redis.password,
        "redis_external_tls": False,  # the stand-in for ElastiCache is a plain test server
        "sapphire_aws_endpoint_url": regions["url"], "postgres_rds_wait_timeout": 60,
        "backup_store_mode": "external", "backup_store_endpoint": regions["url"], "backup_store_region": "us-east-1",
        "backup_store_buckets": buckets, "backup_store_access_key": "testing",
        "backup_store_secret_key": "testing-secret"}}}))
    result = run_playbook("backup.yml", inventory, env={**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"},
                          timeout=600)
    assert result.rc == 0, result.explain()
    found = {bucket: [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
             for bucket in buckets.values()}
    (key,) = found[buckets["primary"]]
    assert found[buckets["dr"]] == [key] and key.endswith("/manifest.json"), found
    backup = json.loads(s3.get_object(Bucket=buckets["dr"], Key=key)["Body"].read())
    assert sorted(backup["components"]) == ["postgres"] and backup["kept_by_provider"] == {"redis": "elasticache"}
    manifest = backup["components"]["postgres"] | {"id": backup["id"]}
    snapshot = manifest["snapshot"]
    assert manifest["method"].startswith("RDS snapshot") and snapshot["copy_status"] == "available", manifest
    copied = client(regions["url"], "rds", "us-west-2").describe_db_snapshots(DBSnapshotIdentifier=snapshot["id"])
    assert copied["DBSnapshots"][0]["DBInstanceIdentifier"] == regions["east"]
    assert not (tmp_path / "local" / "backups" / "redis").exists(), "a Redis backup the toolkit did not take"
    shown = " ".join(" ".join(str(item.get("msg", "")) for item in
                              result.task_results("Show what was backed up").values()).split())
    assert "redis: NOT backed up by this toolkit: its provider (elasticache) keeps the backups" in shown, shown
    assert throwaway_redis.client().hget("sapphire:backup:postgres", "id") == manifest["id"]
    assert throwaway_redis.client().exists("sapphire:backup:redis") == 0
