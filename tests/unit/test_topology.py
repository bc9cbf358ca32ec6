"""filter_plugins/topology.py: one topology for every playbook, after the platform state's overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
topo_mod = load_module("topology", "filter_plugins")

LOCAL = {"ansible_connection": "local"}
CLUSTERS = [{"inventory_hostname": "local-primary", "sapphire_region": "primary"},
            {"inventory_hostname": "local-dr", "sapphire_region": "dr"}]
REDIS = [{**LOCAL, "inventory_hostname": "redis-primary", "redis_port": 16379, "redis_replication_role": "primary",
          "sapphire_region": "primary"},
         {**LOCAL, "inventory_hostname": "redis-dr", "redis_port": 16380, "redis_replication_role": "replica",
          "sapphire_region": "dr"}]
POSTGRES = [{"inventory_hostname": "pg-a", "ansible_host": "10.0.0.5", "postgres_replication_role": "primary",
             "sapphire_region": "primary"},
            {"inventory_hostname": "pg-b", "postgres_port": 15433, "postgres_replication_role": "standby",
             "sapphire_region": "dr"}]
FAILED_OVER = {"live_region": "dr", "epoch": 4, "host_overrides": {
    "redis-dr": {"redis_replication_role": "primary"}, "redis-primary": {"redis_replication_role": "replica"},
    "pg-b": {"postgres_replication_role": "primary"}, "pg-a": {"postgres_replication_role": "standby"}}}


def topology(state: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return topo_mod.topology(CLUSTERS, REDIS, POSTGRES, state, **kwargs)


def test_home_layout_from_the_inventory() -> None:
    topo = topology()
    assert topo["live_region"] == "primary" and topo["epoch"] == 0
    assert topo["redis"]["primary"] == {"host": "redis-primary", "address": "127.0.0.1", "port": 16379,
                                        "region": "primary", "role": "primary", "provider": "host"}
    assert topo["postgres"]["primary"]["address"] == "10.0.0.5" and topo["postgres"]["primary"]["port"] == 5432
    assert [item["host"] for item in topo["postgres"]["replicas"]] == ["pg-b"]
    assert topo["clusters"]["live"] == ["local-primary"]


def test_after_a_failover_the_state_decides_not_the_inventory() -> None:
    topo = topology(FAILED_OVER)
    assert topo["live_region"] == "dr" and topo["epoch"] == 4
    assert topo["redis"]["primary"]["host"] == "redis-dr" and topo["redis"]["primary"]["port"] == 16380
    assert topo["postgres"]["primary"]["host"] == "pg-b"
    assert topo["redis"]["by_region"]["primary"]["primary"] is None
    assert topo["clusters"]["live"] == ["local-dr"]


def test_two_primaries_list_the_live_region_first() -> None:
    state = {"live_region": "dr", "host_overrides": {"redis-dr": {"redis_replication_role": "primary"}}}
    topo = topology(state)
    assert [item["host"] for item in topo["redis"]["primaries"]] == ["redis-dr", "redis-primary"]


def test_halt_targets_the_live_primary_first_then_every_other_redis() -> None:
    targets = topo_mod.halt_targets(topology(FAILED_OVER))
    assert [item["host"] for item in targets] == ["redis-dr", "redis-primary"]
    assert topo_mod.halt_targets(topology(redis_mode="external")) == []


def test_services_outside_host_mode_have_no_servers() -> None:
    topo = topology(postgres_mode="kubernetes")
    assert topo["postgres"]["primary"] is None and topo["postgres"]["servers"] == []


ENDPOINTS = {
    "postgres": [{"inventory_hostname": "pg-east", "sapphire_region": "primary", "postgres_external_host": "10.1.0.5",
                  "postgres_external_port": 5433, "postgres_replication_role": "primary",
                  "postgres_external_provider": "self_managed", "postgres_port": 15432},
                 {"inventory_hostname": "pg-west", "sapphire_region": "dr", "postgres_external_host": "pg.west",
                  "postgres_replication_role": "standby", "postgres_external_provider": "self_managed"}],
    "redis": [{"inventory_hostname": "redis-east", "sapphire_region": "primary", "redis_replication_role": "primary"}],
}


def test_external_mode_takes_the_declared_endpoints_with_their_provider() -> None:
    topo = topology(postgres_mode="external", redis_mode="external", endpoints=ENDPOINTS)
    assert topo["postgres"]["primary"] == {"host": "pg-east", "address": "10.1.0.5", "port": 5433,
                                           "region": "primary", "role": "primary", "provider": "self_managed",
                                           "fenced": False}
    west = topo["postgres"]["by_region"]["dr"]["replicas"][0]
    assert (west["address"], west["port"], west["provider"]) == ("pg.west", 5432, "self_managed")
    # Without a provider the endpoint says so (a DR plan refuses it).
    assert topo["redis"]["primary"]["provider"] == "unset" and topo["redis"]["primary"]["address"] == "redis-east"
    # The data hosts of host mode are not servers of an external service, nor the endpoints of a host-mode one.
    assert [item["host"] for item in topo["postgres"]["servers"]] == ["pg-east", "pg-west"]
    assert [item["host"] for item in topology(endpoints=ENDPOINTS)["postgres"]["servers"]] == ["pg-a", "pg-b"]


def test_after_a_failover_the_state_decides_the_external_primary_too() -> None:
    state = {"live_region": "dr", "host_overrides": {"pg-west": {"postgres_replication_role": "primary"},
                                                     "pg-east": {"postgres_replication_role": "standby"}}}
    topo = topology(state, postgres_mode="external", endpoints=ENDPOINTS)
    assert topo["postgres"]["primary"]["host"] == "pg-west" and topo["postgres"]["primary"]["address"] == "pg.west"


READ_OK = {"reachable": 2, "state": {"epoch": 3, "live_region": "dr", "host_overrides": {"a": {}}}, "clusters": []}
READ_NONE = {"reachable": 0, "clusters": [{"name": "local-primary", "error": "connection refused"}]}
CACHE = {"epoch": 2, "live_region": "dr", "host_overrides": {}, "updated": "2026-12-01T00:00:00Z"}


def source(read: Any, cached: Any = None, store: str = "clusters", writes: bool = True,
           from_cache: bool = False) -> dict[str, Any]:
    return topo_mod.state_source(read, cached, store, writes, from_cache, "/c/state.yml")


def test_the_clusters_decide_when_one_answers() -> None:
    decided = source(READ_OK, CACHE)
    assert decided["source"] == "clusters" and decided["state"]["epoch"] == 3 and not decided["refuse"]


def test_no_cluster_a_writer_refuses_naming_the_way_out_and_never_uses_the_home_layout() -> None:
    decided = source(READ_NONE, CACHE)
    assert "sapphire_state_from_cache=true" in decided["refuse"] and "connection refused" in decided["refuse"]
    assert "epoch 2, live region dr" in decided["refuse"]
    assert "Nothing was written" in decided["refuse"]
    assert "the cache file does not exist" in source(READ_NONE, None)["refuse"]


def test_no_cluster_the_cache_when_asked_or_for_a_read_only_run() -> None:
    asked = source(READ_NONE, CACHE, from_cache=True)
    assert not asked["refuse"] and asked["state"]["live_region"] == "dr" and "cached state" in asked["warning"]
    reader = source(READ_NONE, CACHE, writes=False)
    assert not reader["refuse"] and reader["state"]["epoch"] == 2 and reader["warning"]


def test_a_file_store_is_explicit_and_old_cache_keys_are_read() -> None:
    decided = source({}, {"dr_active_region": "dr", "dr_host_overrides": {"x": {"a": 1}}}, store="file")
    assert decided["state"]["live_region"] == "dr" and decided["state"]["host_overrides"] == {"x": {"a": 1}}
    with pytest.raises(AnsibleFilterError, match="sapphire_state_store"):
        source({}, None, store="somewhere")


# The standbys of a PostgreSQL primary: one rule for its slots, its synchronous_standby_names and validate.

STANDBYS = [
    {"inventory_hostname": "pg-home", "postgres_replication_role": "primary"},
    {"inventory_hostname": "PG-DR.east", "postgres_replication_role": "standby", "postgres_primary_host": "pg-home",
     "postgres_synchronous_commit_mode": "sync"},
    {"inventory_hostname": "pg-report", "postgres_replication_role": "standby", "postgres_primary_host": "pg-home",
     "postgres_replication_slot": "reporting"},
    {"inventory_hostname": "pg-old", "postgres_replication_role": "standby", "postgres_primary_host": "pg-home",
     "postgres_synchronous_commit_mode": "sync", "postgres_fenced": True},
    {"inventory_hostname": "pg-elsewhere", "postgres_replication_role": "standby", "postgres_primary_host": "pg-other"},
    {"inventory_hostname": "pg-was-standby", "postgres_replication_role": "primary",
     "postgres_primary_host": "pg-home"},
]


def test_standbys_of_a_primary_with_their_slots_modes_and_fence() -> None:
    found = topo_mod.postgres_standbys(STANDBYS, "pg-home")
    assert found == [
        {"host": "PG-DR.east", "slot": "pg_dr_east", "sync": True, "fenced": False},
        {"host": "pg-report", "slot": "reporting", "sync": False, "fenced": False},
        {"host": "pg-old", "slot": "pg_old", "sync": True, "fenced": True},
    ]


def test_a_standby_without_its_own_mode_takes_the_primarys() -> None:
    assert [item["sync"] for item in topo_mod.postgres_standbys(STANDBYS, "pg-home", "sync")] == [True, True, True]


def test_a_fenced_flag_from_extra_vars_is_read_as_a_boolean() -> None:
    hosts = [{"inventory_hostname": "a", "postgres_replication_role": "standby", "postgres_primary_host": "p",
              "postgres_fenced": value} for value in ("true", "False", "no", "1")]
    assert [item["fenced"] for item in topo_mod.postgres_standbys(hosts, "p")] == [True, False, False, True]


def test_the_slot_name_is_what_postgresql_accepts() -> None:
    assert topo_mod.postgres_slot("Redis-DR.1") == "redis_dr_1"
    assert topo_mod.postgres_slot("pg-dr", "kept") == "kept"


def test_the_external_target_is_the_promoted_endpoint_else_the_live_primary_else_none() -> None:
    topo = topology(postgres_mode="external", endpoints=ENDPOINTS)
    assert topo_mod.external_target(topo, "postgres") == {"address": "10.1.0.5", "port": 5433}
    promoted = topo["postgres"]["by_region"]["dr"]["replicas"][0]
    assert topo_mod.external_target(topo, "postgres", promoted) == {"address": "pg.west", "port": 5432}
    # No endpoints declared (the single postgres_external_host of older inventories): nothing to point at here.
    assert topo_mod.external_target(topology(postgres_mode="external"), "postgres") == {}


def service(name: str, endpoint: str | None) -> dict[str, Any]:
    annotations = {f"sapphire.io/{name}-endpoint": endpoint} if endpoint else {}
    return {"metadata": {"name": name, "annotations": annotations}}


def test_the_agents_view_agrees_with_the_live_primaries_or_fails_naming_both() -> None:
    expected = {"postgres": {"address": "10.1.0.5", "port": 5433}, "redis": {}}
    agree = topo_mod.service_checks([service("postgres", "10.1.0.5:5433"), service("redis", "x:1")], expected)
    assert [(item["name"], item["status"]) for item in agree] == [("postgres_service_target", "ok")]
    stale = topo_mod.service_checks([service("postgres", "10.0.0.9:5432")], expected)[0]
    assert stale["status"] == "fail" and "10.0.0.9:5432" in stale["msg"] and "10.1.0.5:5433" in stale["msg"]
    missing = topo_mod.service_checks([], expected)[0]
    assert missing["status"] == "fail" and "no Service postgres" in missing["msg"]


MONITORING = [{**LOCAL, "inventory_hostname": "monitoring-local", "prometheus_port": 19090},
              {"inventory_hostname": "prom-dr-1", "ansible_host": "10.1.0.7", "sapphire_region": "dr"},
              {"inventory_hostname": "prom-dr-2", "ansible_host": "10.1.0.8", "sapphire_region": "dr"}]


def test_each_region_publishes_the_prometheus_of_its_first_monitoring_host() -> None:
    # What a canary tier or a blue-green switch of that region is analysed with (agents_canary_prometheus_url unset).
    assert topology(monitoring_hosts=MONITORING)["prometheus"] == {
        "primary": "http://127.0.0.1:19090", "dr": "http://10.1.0.7:9090"}
    assert topology()["prometheus"] == {}, "no monitoring host: no Prometheus to analyse with"


def test_a_prometheus_is_reached_at_the_hosts_address_else_its_name() -> None:
    assert topo_mod.prometheus({"inventory_hostname": "prom.example", "prometheus_port": "9091"}) == {
        "host": "prom.example", "region": "primary", "url": "http://prom.example:9091"}
    with pytest.raises(AnsibleFilterError, match=r"prometheus_port of prom\.example is not a port number"):
        topo_mod.prometheus({"inventory_hostname": "prom.example", "prometheus_port": "http"})
