"""TLS helpers: the subject alternative names of a server certificate (the pki role), and how a client of the toolkit
(validate, the DR steps, the controller's SQL and redis-cli, the emergency stop, the workload) reaches a PostgreSQL
server or a Redis."""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.errors import AnsibleFilterError

# Listen addresses that mean every interface (what the server binds, not what a client connects to).
WILDCARDS = frozenset({"", "*", "0.0.0.0", "::"})  # noqa: S104


def subject_alt_names(names: list[str]) -> list[str]:
    """Filter: IP:<address> for an address, DNS:<name> otherwise; duplicates and empty names dropped, order kept."""
    result: list[str] = []
    for name in names:
        name = str(name or "").strip()
        if name in WILDCARDS:  # a wildcard listen address is no name of the server
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            entry = f"DNS:{name}"
        if entry not in result:
            result.append(entry)
    return result


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING = ("verify-ca", "verify-full")


def postgres_client_tls(mode: Any, tls: Any, ca_file: Any, external_sslmode: Any = "verify-full",
                        external_sslrootcert: Any = "system") -> dict[str, str]:
    """Filter: {sslmode, sslrootcert} of a connection to a PostgreSQL server in postgres_mode `mode`.

    host with postgres_tls: verify-full against the platform CA (ca_file, postgres_tls_ca_file); external: the
    external settings, the CA given only to a mode that verifies (libpq refuses sslrootcert=system with a weaker one);
    anything else (a server without TLS, the cluster's own): prefer, no CA.
    """
    if mode == "external":
        if external_sslmode not in SSLMODES:
            raise AnsibleFilterError(f"postgres_external_sslmode must be one of {', '.join(SSLMODES)}; "
                                     f"got {external_sslmode!r}")
        rootcert = str(external_sslrootcert or "") if external_sslmode in VERIFYING else ""
        if external_sslmode in VERIFYING and not rootcert:
            raise AnsibleFilterError(f"postgres_external_sslmode {external_sslmode} needs postgres_external_sslrootcert"
                                     " (a CA bundle file on the controller, or system)")
        return {"sslmode": str(external_sslmode), "sslrootcert": rootcert}
    if mode == "host" and tls is True:
        return {"sslmode": "verify-full", "sslrootcert": str(ca_file)}
    return {"sslmode": "prefer", "sslrootcert": ""}


def redis_client_tls(mode: Any, tls: Any, ca_file: Any, external_tls: Any = True,
                     external_ca_file: Any = "") -> dict[str, Any]:
    """Filter: {tls, ca_file} of a connection to a Redis in redis_mode `mode`.

    host with redis_tls: TLS verified (chain and name) against the platform CA (ca_file, redis_tls_ca_file); external:
    redis_external_tls against redis_external_tls_ca_file (empty: the controller's trust store); anything else (an
    instance without TLS, the cluster's own): plain TCP.
    """
    if mode == "external":
        on = external_tls is True
        return {"tls": on, "ca_file": str(external_ca_file or "") if on else ""}
    if mode == "host" and tls is True:
        if not ca_file:
            raise AnsibleFilterError("redis_tls needs redis_tls_ca_file (the platform CA's certificate)")
        return {"tls": True, "ca_file": str(ca_file)}
    return {"tls": False, "ca_file": ""}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sapphire_subject_alt_names": subject_alt_names, "sapphire_postgres_client_tls": postgres_client_tls,
                "sapphire_redis_client_tls": redis_client_tls}
