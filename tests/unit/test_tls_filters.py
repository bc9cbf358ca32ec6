"""The subject alternative names the pki role puts in a server certificate (filter_plugins/tls.py)."""

from __future__ import annotations

from conftest import load_module

tls = load_module("tls", "filter_plugins")


def test_addresses_become_ip_names_and_the_rest_dns_names_once_each_in_order() -> None:
    assert tls.subject_alt_names(["10.0.0.5", "127.0.0.1", "localhost", "pg-east", "::1", "127.0.0.1"]) == [
        "IP:10.0.0.5", "IP:127.0.0.1", "DNS:localhost", "DNS:pg-east", "IP:::1"]


def test_empty_names_and_wildcard_listen_addresses_are_no_names() -> None:
    assert tls.subject_alt_names(["", None, "*", "0.0.0.0", "::", "db.internal"]) == ["DNS:db.internal"]  # noqa: S104
