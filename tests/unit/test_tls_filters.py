"""The subject alternative names the pki role puts in a server certificate, and how the toolkit's clients reach a
PostgreSQL server (filter_plugins/tls.py)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

tls = load_module("tls", "filter_plugins")


def test_addresses_become_ip_names_and_the_rest_dns_names_once_each_in_order() -> None:
    assert tls.subject_alt_names(["10.0.0.5", "127.0.0.1", "localhost", "pg-east", "::1", "127.0.0.1"]) == [
        "IP:10.0.0.5", "IP:127.0.0.1", "DNS:localhost", "DNS:pg-east", "IP:::1"]


def test_empty_names_and_wildcard_listen_addresses_are_no_names() -> None:
    assert tls.subject_alt_names(["", None, "*", "0.0.0.0", "::", "db.internal"]) == ["DNS:db.internal"]  # noqa: S104


@pytest.mark.parametrize("mode", ["host", "kubernetes"])
def test_a_server_with_the_platform_tls_is_verified_by_name_against_the_platform_ca(mode: str) -> None:
    assert tls.postgres_client_tls(mode, True, "/var/lib/sapphire/pki/ca.crt") == {
        "sslmode": "verify-full", "sslrootcert": "/var/lib/sapphire/pki/ca.crt"}


@pytest.mark.parametrize(("mode", "enabled"), [("host", False), ("kubernetes", False)])
def test_a_server_without_the_platform_tls_is_reached_as_before(mode: str, enabled: bool) -> None:
    assert tls.postgres_client_tls(mode, enabled, "/ca.crt") == {"sslmode": "prefer", "sslrootcert": ""}


def test_a_managed_server_is_verified_by_name_against_the_trust_store_by_default() -> None:
    assert tls.postgres_client_tls("external", True, "/ca.crt") == {"sslmode": "verify-full", "sslrootcert": "system"}
    assert tls.postgres_client_tls("external", False, "/ca.crt", "verify-ca", "/etc/rds/global-bundle.pem") == {
        "sslmode": "verify-ca", "sslrootcert": "/etc/rds/global-bundle.pem"}


@pytest.mark.parametrize("sslmode", ["disable", "prefer", "require"])
def test_a_mode_that_does_not_verify_gets_no_ca(sslmode: str) -> None:
    """libpq refuses sslrootcert=system with a mode weaker than verify-full."""
    assert tls.postgres_client_tls("external", True, "/ca.crt", sslmode, "system") == {
        "sslmode": sslmode, "sslrootcert": ""}


@pytest.mark.parametrize(("sslmode", "rootcert", "message"), [
    ("verify", "system", "postgres_external_sslmode must be one of disable, allow, prefer, require, verify-ca"),
    (None, "system", "postgres_external_sslmode must be one of"),
    ("verify-full", "", "postgres_external_sslmode verify-full needs postgres_external_sslrootcert"),
])
def test_bad_external_settings_are_refused_by_name(sslmode: Any, rootcert: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        tls.postgres_client_tls("external", True, "/ca.crt", sslmode, rootcert)


@pytest.mark.parametrize("mode", ["host", "kubernetes"])
def test_a_redis_with_the_platform_tls_is_verified_against_the_platform_ca(mode: str) -> None:
    assert tls.redis_client_tls(mode, True, "/var/lib/sapphire/pki/ca.crt") == {
        "tls": True, "ca_file": "/var/lib/sapphire/pki/ca.crt"}


@pytest.mark.parametrize(("mode", "enabled"), [("host", False), ("kubernetes", False)])
def test_a_redis_without_the_platform_tls_is_reached_over_plain_tcp(mode: str, enabled: bool) -> None:
    assert tls.redis_client_tls(mode, enabled, "/ca.crt", True, "/managed-ca.pem") == {"tls": False, "ca_file": ""}


def test_a_managed_redis_follows_the_external_settings_its_ca_only_with_tls() -> None:
    assert tls.redis_client_tls("external", True, "/ca.crt") == {"tls": True, "ca_file": ""}
    assert tls.redis_client_tls("external", False, "/ca.crt", True, "/managed-ca.pem") == {
        "tls": True, "ca_file": "/managed-ca.pem"}
    assert tls.redis_client_tls("external", True, "/ca.crt", False, "/managed-ca.pem") == {"tls": False, "ca_file": ""}


def test_a_host_mode_redis_with_tls_and_no_ca_is_refused_by_name() -> None:
    with pytest.raises(AnsibleFilterError, match="redis_tls_ca_file"):
        tls.redis_client_tls("host", True, "")


# How the platform's pods reach the data services (the ConfigMaps postgres-client and redis-client).
POINTER = {"host": "sapphire.abc123.eu-west-1.rds.amazonaws.com", "port": 6432}


def test_the_service_names_a_pod_verifies_start_with_the_short_name_it_dials() -> None:
    assert tls.service_names("postgres", "trading-system") == [
        "postgres", "postgres.trading-system", "postgres.trading-system.svc",
        "postgres.trading-system.svc.cluster.local"]
    assert tls.service_names("redis", "") == ["redis"]


def test_pods_verify_a_host_mode_postgres_by_the_service_name_against_the_shipped_platform_ca() -> None:
    client = tls.postgres_client_tls("host", True, "/var/lib/sapphire/pki/ca.crt")
    assert tls.pod_data_client("postgres", "host", client, {"host": "10.0.0.5", "port": 15432}) == {
        "data": {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                 "PGSSLROOTCERT": "/etc/sapphire/tls/postgres/ca.crt"},
        "ca_file": "/var/lib/sapphire/pki/ca.crt"}


def test_pods_dial_a_managed_postgres_verified_by_name_at_its_own_endpoint_with_the_trust_store() -> None:
    client = tls.postgres_client_tls("external", True, "/ca.crt")
    assert tls.pod_data_client("postgres", "external", client, POINTER) == {
        "data": {"POSTGRES_HOST": POINTER["host"], "POSTGRES_PORT": "6432", "PGSSLMODE": "verify-full",
                 "PGSSLROOTCERT": "system"},
        "ca_file": ""}


def test_pods_reach_a_managed_postgres_that_is_not_verified_by_name_through_the_service() -> None:
    client = tls.postgres_client_tls("external", True, "/ca.crt", "verify-ca", "/etc/rds/global-bundle.pem")
    result = tls.pod_data_client("postgres", "external", client, POINTER)
    assert result["data"]["POSTGRES_HOST"] == "postgres" and result["data"]["PGSSLMODE"] == "verify-ca"
    assert result["ca_file"] == "/etc/rds/global-bundle.pem"


def test_pods_verify_the_in_cluster_servers_by_their_service_names_or_reach_them_plainly_without_tls() -> None:
    assert tls.pod_data_client("postgres", "kubernetes", tls.postgres_client_tls("kubernetes", True, "/ca.crt"),
                               {"host": "", "port": 5432}) == {
        "data": {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "verify-full",
                 "PGSSLROOTCERT": "/etc/sapphire/tls/postgres/ca.crt"}, "ca_file": "/ca.crt"}
    assert tls.pod_data_client("postgres", "kubernetes", tls.postgres_client_tls("kubernetes", False, "/ca.crt"),
                               {"host": "", "port": 5432}) == {
        "data": {"POSTGRES_HOST": "postgres", "POSTGRES_PORT": "5432", "PGSSLMODE": "prefer"}, "ca_file": ""}
    assert tls.pod_data_client("redis", "kubernetes", tls.redis_client_tls("kubernetes", False, "/ca.crt"),
                               {"host": "", "port": 6379}) == {
        "data": {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "REDIS_TLS": "false"}, "ca_file": ""}


def test_pods_verify_a_host_mode_redis_by_the_service_name_and_a_managed_one_at_its_endpoint() -> None:
    host = tls.pod_data_client("redis", "host", tls.redis_client_tls("host", True, "/pki/ca.crt"),
                               {"host": "10.0.0.6", "port": 16379})
    assert host == {"data": {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "REDIS_TLS": "true",
                             "REDIS_CA_FILE": "/etc/sapphire/tls/redis/ca.crt"}, "ca_file": "/pki/ca.crt"}
    managed = tls.pod_data_client("redis", "external", tls.redis_client_tls("external", True, "", True, ""),
                                  {"host": "10.3.0.4", "port": 6378})
    assert managed == {"data": {"REDIS_HOST": "10.3.0.4", "REDIS_PORT": "6378", "REDIS_TLS": "true"}, "ca_file": ""}


def test_an_unknown_data_service_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="unknown service 'mysql'"):
        tls.pod_data_client("mysql", "host", {}, {"host": "", "port": 0})


def test_a_statefulset_s_pods_are_named_through_their_headless_service() -> None:
    assert tls.statefulset_names("redis", "redis-headless", "trading-system", 2) == [
        "redis-0.redis-headless.trading-system.svc", "redis-0.redis-headless.trading-system.svc.cluster.local",
        "redis-1.redis-headless.trading-system.svc", "redis-1.redis-headless.trading-system.svc.cluster.local"]
