"""filter_plugins/service_inputs.py: the redis, postgres and monitoring roles refuse bad input before anything is
written, every problem at once, each naming its variable, and never with a secret's value in the message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import load_module

inputs = load_module("service_inputs", "filter_plugins")

RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
REDIS = {"redis_password": "s3cret-redis-pass", "redis_mode": "kubernetes", "redis_image": "redis:7.2.4",
         "redis_exporter_image": "oliver006/redis_exporter:v1.58.0", "redis_maxmemory": "2gb", "redis_replicas": 1,
         "redis_storage_size": "10Gi", "redis_resources": RESOURCES, "redis_exporter_resources": RESOURCES,
         "redis_external_host": "", "redis_external_port": 6379, "redis_replication_role": "primary",
         "redis_replica_of": "", "redis_agent_password": "agent-pass-1", "redis_replication_password": "repl-pass-1",
         "redis_monitor_password": "monitor-pass-1", "redis_agent_user": "sapphire-agent",
         "redis_replication_user": "sapphire-replica", "redis_monitor_user": "sapphire-monitor",
         "redis_agent_write_keys": ["sapphire:agent:*", "sapphire:portfolio"]}
HINT = "define vault_redis_password in the vault file"


def redis(on_cluster: bool = True, on_redis_host: bool = False, host: str = "local-primary",
          digests: Any = False, **values: Any) -> list[str]:
    return inputs.redis_input_problems({**REDIS, **values}, on_cluster, on_redis_host, host,
                                       ["redis-primary", "redis-dr"], [], digests, HINT)


@pytest.mark.parametrize("name", ["redis_agent_password", "redis_replication_password", "redis_monitor_password"])
def test_an_unset_redis_user_password_is_refused_by_name(name: str) -> None:
    (problem,) = redis(**{name: "short"})
    assert problem.startswith(f"{name} must be set (8+ characters): define vault_{name} in the vault file")
    assert "short" not in problem


def test_sound_redis_inputs_pass_in_every_mode() -> None:
    assert redis() == []
    assert redis(redis_mode="host", on_cluster=False, on_redis_host=True, host="redis-dr",
                 redis_replication_role="replica", redis_replica_of="redis-primary") == []
    assert redis(redis_mode="external", redis_external_host="redis.example.internal") == []
    assert redis(redis_maxmemory=0) == [] and redis(redis_maxmemory="512MB") == []


@pytest.mark.parametrize(("values", "message"), [
    ({"redis_password": ""}, f"redis_password is empty: {HINT}"),
    ({"redis_password": None}, f"redis_password is empty: {HINT}"),
    ({"redis_maxmemory": "lots"}, "redis_maxmemory = 'lots' is not a Redis memory size"),
    ({"redis_image": "redis"}, "redis_image: 'redis' is not pinned"),
    ({"redis_replicas": 0}, "redis_replicas (0) must be at least 1"),
    ({"redis_storage_size": "ten gigs"}, "redis_storage_size (ten gigs) a Kubernetes quantity"),
    ({"redis_resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}},
     "redis_resources = {'requests': {'cpu': '2', 'memory': '1Gi'}, 'limits': {'cpu': '1', 'memory': '1Gi'}} is not "
     "valid."),
    ({"redis_exporter_resources": {"requests": {"cpu": "1"}}}, "redis_exporter_resources = "),
])
def test_bad_redis_inputs_are_refused_naming_the_variable(values: dict[str, Any], message: str) -> None:
    problems = redis(**values)
    assert any(message in problem for problem in problems), problems


@pytest.mark.parametrize("mode", ["host", "kubernetes"])
@pytest.mark.parametrize("values", [{"redis_agent_user": "default"}, {"redis_monitor_user": "sapphire-agent"},
                                    {"redis_replication_user": "default", "redis_monitor_user": "default"}])
def test_a_server_of_our_own_needs_three_distinct_users_none_the_administrator(
        mode: str, values: dict[str, Any]) -> None:
    """A user named default would take the administrator's place in the ACL; two purposes on one user would give
    the monitor the agents' writes (or the agents replication)."""
    (problem,) = redis(redis_mode=mode, on_cluster=mode == "kubernetes", on_redis_host=mode == "host", **values)
    assert problem.startswith("redis_agent_user, redis_replication_user, redis_monitor_user must be three different "
                              f"users and none 'default' (the administrator, redis_password) when redis_mode is {mode}")


def test_a_managed_redis_with_one_auth_string_maps_every_purpose_to_default() -> None:
    assert redis(redis_mode="external", redis_external_host="redis.example.internal", redis_agent_user="default",
                 redis_replication_user="default", redis_monitor_user="default") == []


@pytest.mark.parametrize("user", ["", None, "sapphire agent", ">secret", "~*", 7])
def test_a_redis_user_name_that_would_break_the_acl_rule_is_refused_by_name(user: Any) -> None:
    (problem,) = redis(redis_monitor_user=user)
    assert problem.startswith("redis_monitor_user must be a Redis ACL user name")


@pytest.mark.parametrize("keys", [[], "sapphire:agent:*", ["sapphire:agent:* allcommands"], ["~sapphire:*"], [""],
                                  None])
def test_the_agents_write_keys_must_be_a_list_of_key_patterns(keys: Any) -> None:
    (problem,) = redis(redis_agent_write_keys=keys)
    assert problem.startswith("redis_agent_write_keys must be a list of one or more Redis key patterns")


def test_every_redis_problem_is_listed_at_once_and_the_password_never_shown() -> None:
    problems = redis(redis_maxmemory="lots", redis_replicas=0, redis_image="redis:latest",
                     redis_password="short")
    assert len(problems) == 3, problems
    assert not any("short" in problem for problem in problems)


def test_the_cluster_only_checks_do_not_apply_to_a_redis_host() -> None:
    assert redis(on_cluster=False, on_redis_host=True, redis_mode="host", redis_replicas=0,
                 redis_image="redis:latest", host="redis-primary") == []


def test_digests_required_refuses_a_tag_and_reads_a_survey_string() -> None:
    (problem,) = redis(digests="yes")[:1]
    assert "pinned by tag only" in problem


@pytest.mark.parametrize("values", [
    {"redis_external_host": ""},
    {"redis_external_host": "redis.example.internal", "redis_external_port": 70000},
    {"redis_external_host": "redis.example.internal", "redis_external_port": "sixty"},
    {"redis_external_host": "redis.example.internal", "redis_external_port": True},
])
def test_external_redis_needs_an_endpoint_and_a_port(values: dict[str, Any]) -> None:
    (problem,) = redis(redis_mode="external", **values)
    assert problem.startswith("redis_mode is external: declare the endpoint of each region")


def test_the_external_port_means_the_same_from_yaml_and_from_extra_vars() -> None:
    """-e redis_external_port=6380 and an AWX survey give a string; YAML and JSON an integer."""
    for port in (6380, "6380", " 6380 "):
        assert redis(redis_mode="external", redis_external_host="redis.example.internal",
                     redis_external_port=port) == []


def test_external_redis_endpoints_declared_as_hosts_suffice() -> None:
    assert inputs.redis_input_problems({**REDIS, "redis_mode": "external"}, True, False, "local-primary", [],
                                       ["redis-endpoint-primary"], False, HINT) == []


@pytest.mark.parametrize("replica_of", ["", "redis-elsewhere", "redis-dr"])
def test_a_replica_needs_another_redis_host_as_its_primary(replica_of: str) -> None:
    (problem,) = redis(on_cluster=False, on_redis_host=True, host="redis-dr", redis_mode="host",
                       redis_replication_role="replica", redis_replica_of=replica_of)
    assert problem == ("redis-dr has redis_replication_role replica: set redis_replica_of to the inventory name of "
                       f"its primary in group redis_hosts (got '{replica_of}')")


POSTGRES = {"postgres_password": "app-password-1", "postgres_replication_password": "repl-password-1",
            "postgres_agent_password": "agent-password-1", "postgres_coordinator_password": "coord-password-1",
            "postgres_monitor_password": "monitor-password-1",
            "postgres_mode": "kubernetes", "postgres_image": "timescale/timescaledb:2.14.2-pg16",
            "postgres_exporter_image": "prometheuscommunity/postgres-exporter:v0.15.0",
            "postgres_retention_days": {"trades": 90, "signals": 30}, "postgres_external_host": "",
            "postgres_user": "sapphire", "postgres_replication_user": "replicator",
            "postgres_agent_user": "sapphire_agent",
            "postgres_coordinator_user": "sapphire_coordinator", "postgres_monitor_user": "sapphire_monitor",
            "postgres_backup_user": "sapphire_backup", "postgres_admin_user": "",
            "postgres_admin_password": "admin-password-1"}
TABLES = ["trades", "signals"]


def postgres(on_cluster: bool = True, endpoints: list[str] | None = None, **values: Any) -> list[str]:
    return inputs.postgres_input_problems({**POSTGRES, **values}, on_cluster, endpoints or [], TABLES, False)


def test_sound_postgres_inputs_pass() -> None:
    assert postgres() == []
    assert postgres(postgres_mode="external", postgres_external_host="db.example.internal") == []
    assert postgres(postgres_mode="external", endpoints=["pg-endpoint-primary"]) == []


@pytest.mark.parametrize("values", [{"postgres_password": "short"}, {"postgres_replication_password": ""},
                                    {"postgres_password": None}, {"postgres_agent_password": "short"},
                                    {"postgres_coordinator_password": ""}, {"postgres_monitor_password": None}])
def test_postgres_passwords_of_fewer_than_8_characters_are_refused_by_name_without_their_value(
        values: dict[str, Any]) -> None:
    (problem,) = postgres(**values)
    (name,) = values
    assert problem.startswith(f"{name} must be set (8+ characters): define vault_{name} in the vault file")
    assert "short" not in problem


def test_every_unset_postgres_password_is_named_at_once() -> None:
    (problem,) = postgres(postgres_agent_password="", postgres_monitor_password="")
    assert problem.startswith("postgres_agent_password, postgres_monitor_password must be set")


@pytest.mark.parametrize("values", [{"postgres_agent_user": "sapphire"}, {"postgres_monitor_user": "replicator"},
                                    {"postgres_coordinator_user": "sapphire_agent"},
                                    {"postgres_backup_user": "sapphire_monitor"}])
def test_each_purpose_needs_a_login_of_its_own(values: dict[str, Any]) -> None:
    """The agents' login equal to the owner would give the agents DDL; the fence would skip a shared name."""
    (problem,) = postgres(**values)
    assert problem.startswith("postgres_user, postgres_replication_user, postgres_agent_user, "
                              "postgres_coordinator_user, postgres_monitor_user, postgres_backup_user must be 6 "
                              "different logins "
                              "(one per purpose)")


@pytest.mark.parametrize("password", ["", None, "short"])
def test_in_cluster_postgres_needs_a_bootstrap_superuser_password_of_its_own(password: Any) -> None:
    """Kubernetes mode: the image's bootstrap superuser is the administrative login, so that the owner is none."""
    (problem,) = postgres(postgres_admin_password=password)
    assert problem.startswith("postgres_admin_password must be set (8+ characters) in kubernetes mode")
    assert postgres(postgres_mode="external", postgres_external_host="db.internal", postgres_admin_password="") == []
    assert postgres(on_cluster=False, postgres_mode="host", postgres_admin_password="") == []


def test_the_bootstrap_superuser_may_not_be_a_platform_login() -> None:
    (problem,) = postgres(postgres_admin_user="sapphire")
    assert problem.startswith("postgres_admin_user 'sapphire' must not be one of the platform's logins")


@pytest.mark.parametrize("user", ["", None, "Sapphire", "sapphire-agent", "postgres", "pg_monitor", "a;drop", 3])
def test_a_login_name_that_is_not_a_plain_role_name_is_refused_by_name(user: Any) -> None:
    (problem,) = postgres(postgres_coordinator_user=user)
    assert problem.startswith("postgres_coordinator_user must be a PostgreSQL role name")
    (problem,) = postgres(postgres_backup_user=user)  # pgBackRest's login, written into pg_hba and pg_ident
    assert problem.startswith("postgres_backup_user must be a PostgreSQL role name")


@pytest.mark.parametrize("user", ["sapphire admin", "a;drop", "1admin", 3, "x" * 64])
def test_an_administrative_login_that_is_not_a_login_name_is_refused(user: Any) -> None:
    problems = postgres(postgres_admin_user=user, postgres_mode="external", postgres_external_host="db.internal")
    assert len(problems) == 1 and problems[0].startswith(f"postgres_admin_user {user!r} must be empty or a login name")
    assert postgres(postgres_admin_user="RdsMaster", postgres_mode="external", postgres_external_host="db.internal") \
        == []


@pytest.mark.parametrize("retention", [{"trades": 90}, {"trades": 90, "signals": 0}, {"trades": 90, "signals": "30"},
                                       {"trades": 90, "signals": True}, "90"])
def test_a_retention_that_misses_a_table_or_is_not_a_positive_whole_number_is_refused(retention: Any) -> None:
    (problem,) = postgres(postgres_retention_days=retention)
    assert problem.startswith("postgres_retention_days needs a positive number of days for each of trades, signals")


def test_postgres_images_and_the_external_endpoint_are_checked_on_the_cluster_only() -> None:
    (problem,) = postgres(postgres_image="timescale/timescaledb")
    assert problem.startswith("postgres_image: 'timescale/timescaledb' is not pinned")
    assert postgres(on_cluster=False, postgres_image="timescale/timescaledb") == []
    assert postgres(postgres_mode="external")[0].startswith("postgres_mode is external")
    assert postgres(on_cluster=False, postgres_mode="external") == []


MONITORING = {"monitoring_mode": "host", "monitoring_alert_drawdown_ratio": 0.05,
              "monitoring_alert_trading_loss_usd": 2500, "monitoring_alert_stale_seconds": "30",
              "monitoring_alert_drawdown_for": "5m", "monitoring_alert_summary": "not a threshold",
              "monitoring_prometheus_retention": "30d", "monitoring_backup_components": ["postgres", "redis"],
              "monitoring_prometheus_image": "prom/prometheus:v2.51.0",
              "monitoring_alertmanager_image": "prom/alertmanager:v0.27.0",
              "monitoring_grafana_image": "grafana/grafana:10.4.1", "monitoring_external_prometheus_host": "",
              "monitoring_telegram_chat_id": 0, "sapphire_telegram_bot_token": "",
              "monitoring_prometheus_port": 9090, "monitoring_alertmanager_port": 9093}


def monitoring(on_cluster: bool = False, on_monitoring_host: bool = True, **values: Any) -> list[str]:
    return inputs.monitoring_input_problems({**MONITORING, **values}, on_cluster, on_monitoring_host, False)


def test_sound_monitoring_inputs_pass() -> None:
    assert monitoring() == []
    assert monitoring(on_cluster=True, on_monitoring_host=False, monitoring_external_prometheus_host="10.0.0.5") == []
    assert monitoring(monitoring_telegram_chat_id="-1001234", sapphire_telegram_bot_token="123:abc") == []


@pytest.mark.parametrize(("values", "message"), [
    ({"monitoring_alert_drawdown_ratio": 1.5}, "Bad alert threshold: monitoring_alert_drawdown_ratio=1.5."),
    ({"monitoring_alert_trading_loss_usd": 0}, "Bad alert threshold: monitoring_alert_trading_loss_usd=0."),
    ({"monitoring_alert_stale_seconds": "soon"}, "Bad alert threshold: monitoring_alert_stale_seconds=soon."),
    ({"monitoring_alert_stale_seconds": "1.2.3"}, "Bad alert threshold: monitoring_alert_stale_seconds=1.2.3."),
    ({"monitoring_alert_drawdown_for": "5 minutes"}, "Bad duration: monitoring_alert_drawdown_for=5 minutes."),
    ({"monitoring_prometheus_retention": "30"}, "Bad duration: monitoring_prometheus_retention=30."),
    ({"monitoring_backup_components": []}, "monitoring_backup_components must list component names"),
    ({"monitoring_backup_components": ["Postgres"]}, "monitoring_backup_components must list component names"),
    ({"monitoring_alertmanager_port": "9090"}, "prometheus_port and alertmanager_port are both 9090"),
    ({"monitoring_telegram_chat_id": "-1001234"}, "monitoring_telegram_chat_id is set but sapphire_telegram_bot_token"),
])
def test_bad_monitoring_inputs_are_refused_naming_the_variable(values: dict[str, Any], message: str) -> None:
    (problem,) = monitoring(**values)
    assert problem.startswith(message), problem


def test_a_loopback_outside_prometheus_is_refused_for_the_cluster_only() -> None:
    (problem,) = monitoring(on_cluster=True, on_monitoring_host=False,
                            monitoring_external_prometheus_host="127.0.0.1")
    assert problem.startswith("monitoring_external_prometheus_host is 127.0.0.1, a loopback address")
    assert monitoring(monitoring_external_prometheus_host="127.0.0.1") == []


def test_monitoring_images_are_checked_in_kubernetes_mode_only() -> None:
    assert monitoring(monitoring_grafana_image="grafana/grafana:latest") == []
    (problem,) = monitoring(on_cluster=True, monitoring_mode="kubernetes", monitoring_grafana_image="grafana/grafana")
    assert problem.startswith("monitoring_grafana_image: 'grafana/grafana' is not pinned")


# ---------------------------------------------------------------- namespace
FORBIDDEN = ["default", "kube-system", "kube-public", "kube-node-lease"]
QUOTA = {"requests.cpu": "64", "requests.memory": "128Gi", "pods": "200"}
CIDRS = {"namespace_api_ingress_cidrs": ["10.0.0.0/8"], "namespace_grafana_ingress_cidrs": [],
         "namespace_external_data_cidrs": ["10.20.0.0/16"], "namespace_kube_api_cidrs": ["10.96.0.1/32"],
         "namespace_alert_egress_cidrs": [], "namespace_exchange_egress_cidrs": ["0.0.0.0/0"]}


def namespace(name: Any = "trading-system", quota: Any = None, level: Any = "restricted",
              exchange_except: Any = None, **cidrs: Any) -> list[str]:
    return inputs.namespace_settings_problems(name, FORBIDDEN, QUOTA if quota is None else quota, level,
                                              {**CIDRS, **cidrs}, ["10.0.0.0/8"] if exchange_except is None
                                              else exchange_except)


def test_sound_namespace_settings_pass() -> None:
    assert namespace() == []
    assert namespace(level="baseline", namespace_grafana_ingress_cidrs=["192.0.2.0/24", "2001:db8::/32"]) == []


@pytest.mark.parametrize(("values", "message"), [
    ({"name": "Trading_System"}, "sapphire_namespace 'Trading_System' must be a DNS-1123 label and not one of default"),
    ({"name": "x" * 64}, "must be a DNS-1123 label"),
    ({"name": "kube-system"}, "sapphire_namespace 'kube-system' must be"),
    ({"quota": {"requests.cpu": "lots"}}, "namespace_quota.requests.cpu (lots) must be a Kubernetes quantity"),
    ({"quota": ["64"]}, "namespace_quota must be a mapping"),
    ({"level": "strict"}, "namespace_pod_security_level (strict) must be restricted, baseline or privileged"),
    ({"namespace_api_ingress_cidrs": ["10.0.0.0/33"]}, "namespace_api_ingress_cidrs: '10.0.0.0/33' is not a CIDR"),
    ({"namespace_kube_api_cidrs": "10.96.0.1/32"}, "namespace_kube_api_cidrs must be a list of CIDRs"),
    ({"exchange_except": ["private"]}, "namespace_exchange_egress_except: 'private' is not a CIDR"),
])
def test_bad_namespace_settings_are_refused_naming_the_variable(values: dict[str, Any], message: str) -> None:
    assert any(message in problem for problem in namespace(**values)), namespace(**values)


def test_every_namespace_problem_is_listed_at_once() -> None:
    problems = namespace(name="default", level="none", quota={"pods": "many"},
                         namespace_alert_egress_cidrs=["mail.example.com"])
    assert len(problems) == 4, problems


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_an_external_ca_file_the_controller_cannot_use_is_refused_by_name_before_any_connection(tmp_path: Any) -> None:
    good, key = tmp_path / "ca.pem", tmp_path / "server.key"
    good.write_text(CA_PEM)
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    external = {"redis_mode": "external", "redis_external_host": "redis.example.internal", "redis_external_tls": True}
    assert redis(**external, redis_external_tls_ca_file=str(good)) == []
    assert redis(**external, redis_external_tls_ca_file="") == []  # the trust store
    (missing,) = redis(**external, redis_external_tls_ca_file=str(tmp_path / "none.pem"))
    assert missing.startswith("redis_external_tls_ca_file = ") and "cannot be read on the controller" in missing
    (wrong,) = redis(**external, redis_external_tls_ca_file=str(key))
    assert wrong.startswith("redis_external_tls_ca_file = ") and "holds no PEM certificate" in wrong
    # Without TLS the file is not used, so not checked.
    assert redis(**{**external, "redis_external_tls": False}, redis_external_tls_ca_file=str(key)) == []

    pg = {"postgres_mode": "external", "postgres_external_host": "db.example.internal"}
    assert postgres(**pg, postgres_external_sslmode="verify-full", postgres_external_sslrootcert=str(good)) == []
    assert postgres(**pg, postgres_external_sslmode="verify-full", postgres_external_sslrootcert="system") == []
    assert postgres(**pg, postgres_external_sslmode="require", postgres_external_sslrootcert=str(key)) == []
    (missing,) = postgres(**pg, postgres_external_sslmode="verify-ca",
                          postgres_external_sslrootcert=str(tmp_path / "none.pem"))
    assert missing.startswith("postgres_external_sslrootcert = ")
    (empty,) = postgres(**pg, postgres_external_sslmode="verify-full", postgres_external_sslrootcert="")
    assert "needs postgres_external_sslrootcert" in empty
    (mode,) = postgres(**pg, postgres_external_sslmode="verify_full", postgres_external_sslrootcert="system")
    assert mode.startswith("postgres_external_sslmode must be one of")


def test_the_external_tls_defaults_are_the_verifying_ones() -> None:
    """Production talks to managed services: the roles' defaults must verify (a default that does not is a silent
    downgrade for every inventory that does not say otherwise)."""
    root = Path(__file__).resolve().parents[2]
    postgres_defaults = yaml.safe_load((root / "roles/postgres/defaults/main.yml").read_text())
    redis_defaults = yaml.safe_load((root / "roles/redis/defaults/main.yml").read_text())
    assert postgres_defaults["postgres_external_sslmode"] == "verify-full"
    assert postgres_defaults["postgres_external_sslrootcert"] == "system"
    assert postgres_defaults["postgres_tls"] is True
    assert redis_defaults["redis_external_tls"] is True and redis_defaults["redis_tls"] is True


def test_a_redis_of_our_own_with_tls_needs_the_ca_file_its_clients_verify_against() -> None:
    host = {"redis_mode": "host", "redis_tls": True}
    assert redis(on_cluster=False, on_redis_host=True, **host, redis_tls_ca_file="/var/lib/sapphire/pki/ca.crt") == []
    (problem,) = redis(on_cluster=False, on_redis_host=True, **host, redis_tls_ca_file="")
    assert problem.startswith("redis_tls is on: set redis_tls_ca_file")
    assert redis(on_cluster=False, on_redis_host=True, redis_mode="host", redis_tls=False, redis_tls_ca_file="") == []


LISTENERS = [{"port": 9090, "pid": 4100, "name": "prometheus", "address": "127.0.0.1", "protocol": "tcp"},
             {"port": 9093, "pid": 5200, "name": "nc", "address": "10.0.0.4", "protocol": "tcp"},
             {"port": 9093, "pid": 5201, "name": "nc", "address": "::", "protocol": "tcp"}]
SERVERS = [{"port_var": "prometheus_port", "port": 9090}, {"port_var": "alertmanager_port", "port": "9093"}]


def test_a_port_held_by_the_server_itself_or_by_nothing_is_no_conflict() -> None:
    assert inputs.port_conflicts(LISTENERS[:1], SERVERS, ["4100\n", ""]) == []
    assert inputs.port_conflicts([], SERVERS, ["", ""]) == []


def test_a_port_another_process_holds_is_named_with_that_process() -> None:
    assert inputs.port_conflicts(LISTENERS, SERVERS, ["4100", "4100"]) == [
        "alertmanager_port 9093 is already used by another process (nc pid 5200, nc pid 5201)."]
    assert inputs.port_conflicts(LISTENERS, SERVERS[:1], [""]) == [
        "prometheus_port 9090 is already used by another process (prometheus pid 4100)."]
