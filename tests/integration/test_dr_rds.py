"""dr-failover.yml with PostgreSQL on RDS (postgres_external_provider rds): the promotion is asked of the RDS API
(the postgres role's rds_promote entry point) and read back, the data path is measured and fenced over the network.

moto's server mode (in this process, as test_rds_provider.py starts it) stands for the RDS API: an instance in
us-east-1 and its cross-region read replica in us-west-2. The databases behind them are test_dr.DataServers'
PostgreSQL primary and standby (declared as the endpoints pg-east and pg-west); moto's PromoteReadReplica is made to
do what RDS does to the database, pg_promote on the standby standing for the replica - the test plays the provider,
nothing of the toolkit is patched. Redis is self-managed (test_dr_self_managed.py covers it).
- --check lists the RDS promotion;
- a failover under the confirmation: the old primary fenced over the network, the replica promoted through the API
  and read back as standalone, the database it stands for a writable primary with the data, loss measured 0 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_dr import in_recovery
from test_dr_self_managed import ExternalRegions, app_can_write
from test_rds_provider import CREDENTIALS, client, free_port, rds_promotes_like_aws, replica_pair, source_of

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CONFIRM = {"confirm": "test"}
ENV = {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def regions() -> Iterator[dict[str, Any]]:
    server_module = pytest.importorskip("moto.moto_server.threaded_moto_server")
    from moto.rds.models import RDSBackend

    original = RDSBackend.promote_read_replica
    rds_promotes_like_aws()
    databases: dict[str, Any] = {}  # instance id -> what RDS does to its database on promotion
    with_data = RDSBackend.promote_read_replica

    def promote(self: Any, db_kwargs: dict[str, Any]) -> Any:
        instance = with_data(self, db_kwargs)
        action = databases.get(db_kwargs["db_instance_identifier"])
        if action:
            action()
        return instance

    RDSBackend.promote_read_replica = promote
    port = free_port()
    moto = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    env = None
    try:
        pair = replica_pair(url)
        east, west = pair["east"], pair["west"]
        env = ExternalRegions.start(
            "sapphire-dr-rds-", providers=("rds", "self_managed"),
            endpoint_vars={"pg-east": {"postgres_rds_instance": east, "postgres_rds_region": "us-east-1"},
                           "pg-west": {"postgres_rds_instance": west, "postgres_rds_region": "us-west-2"}},
            variables={"sapphire_aws_endpoint_url": url, "postgres_rds_wait_timeout": 60})

        def promote_database() -> None:
            with env.servers.admin("pg-dr", "postgres") as conn:
                conn.execute("SELECT pg_promote(true, 60)")

        databases[west] = promote_database
        yield {"env": env, "url": url, "east": east, "west": west}
    finally:
        if env is not None:
            env.servers.stop()
        moto.stop()
        RDSBackend.promote_read_replica = original


def test_check_lists_the_rds_promotion(regions: dict[str, Any]) -> None:
    env: ExternalRegions = regions["env"]
    result = env.run("dr-failover.yml", extra_vars=CONFIRM, check=True, env=ENV)
    assert result.rc == 0, result.explain()
    walk = " ".join(result.stdout.split())
    assert "promote PostgreSQL pg-west through its provider: the RDS read replica promoted" in walk, walk[-3000:]
    assert "would forbid the application login of PostgreSQL pg-east (rds, over the network" in walk
    assert source_of(regions, regions["west"], "us-west-2"), "--check promoted the replica"


def test_failover_promotes_the_replica_through_the_api_and_reads_the_database_back(regions: dict[str, Any]) -> None:
    env: ExternalRegions = regions["env"]
    servers = env.servers
    with servers.app("pg-primary") as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, 'rds-before')")
    result = env.run("dr-failover.yml", extra_vars={**CONFIRM, "dr_reason": "rds drill"}, env=ENV)
    assert result.rc == 0, result.explain()
    assert source_of(regions, regions["west"], "us-west-2") == "", "the RDS replica was not promoted"
    status = client(regions["url"], "rds", "us-west-2").describe_db_instances(
        DBInstanceIdentifier=regions["west"])["DBInstances"][0]["DBInstanceStatus"]
    assert status == "available"
    assert not in_recovery(servers, "pg-dr") and app_can_write(servers, "pg-dr")
    assert not app_can_write(servers, "pg-primary"), "the old primary still takes the application's writes"
    with servers.admin("pg-dr") as conn:
        assert conn.execute("SELECT count(*) FROM trades WHERE order_id = 'rds-before'").fetchone()[0] == 1
        assert conn.execute("SELECT epoch, region FROM sapphire_epoch").fetchone() == (1, "dr")
    state = env.state()
    assert state["live_region"] == "dr"
    report = json.loads(Path(state["history"][-1]["report"]).read_text())
    assert report["rpo"] == "met: 0 bytes lost (measured)", report["loss"]
    print(f"rds failover: RTO {report['rto_seconds']} s, loss {report['loss']}")

    again = env.run("dr-failover.yml", extra_vars=CONFIRM, env=ENV)
    assert again.rc == 0, again.explain()
    assert again.changed == 0, again.changed_tasks()
