"""TLS helpers: the subject alternative names of a server certificate (the pki role), how a client of the toolkit
(validate, the DR steps, the controller's SQL and redis-cli, the emergency stop, the workload) reaches a PostgreSQL
server or a Redis, and how the platform's pods do."""

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

    host or kubernetes with postgres_tls: verify-full against the platform CA (ca_file, postgres_tls_ca_file);
    external: the external settings, the CA given only to a mode that verifies (libpq refuses sslrootcert=system with a
    weaker one); a server without TLS: prefer, no CA.
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
    if mode in ("host", "kubernetes") and tls is True:
        return {"sslmode": "verify-full", "sslrootcert": str(ca_file)}
    return {"sslmode": "prefer", "sslrootcert": ""}


def redis_client_tls(mode: Any, tls: Any, ca_file: Any, external_tls: Any = True,
                     external_ca_file: Any = "") -> dict[str, Any]:
    """Filter: {tls, ca_file} of a connection to a Redis in redis_mode `mode`.

    host or kubernetes with redis_tls: TLS verified (chain and name) against the platform CA (ca_file,
    redis_tls_ca_file); external: redis_external_tls against redis_external_tls_ca_file (empty: the controller's trust
    store); an instance without TLS: plain TCP.
    """
    if mode == "external":
        on = external_tls is True
        return {"tls": on, "ca_file": str(external_ca_file or "") if on else ""}
    if mode in ("host", "kubernetes") and tls is True:
        if not ca_file:
            raise AnsibleFilterError("redis_tls needs redis_tls_ca_file (the platform CA's certificate)")
        return {"tls": True, "ca_file": str(ca_file)}
    return {"tls": False, "ca_file": ""}


# Where the platform's pods find the CA of a data service: the key ca.crt of its ConfigMap <service>-client, mounted by
# the agents role under this directory (<dir>/postgres/ca.crt, <dir>/redis/ca.crt).
POD_CA_DIR = "/etc/sapphire/tls"
SERVICE_PORTS = {"postgres": 5432, "redis": 6379}


def service_names(service: str, namespace: str) -> list[str]:
    """Filter: the names a pod reaches the Service `service` of `namespace` by (what a server certificate must carry
    for a pod to verify it by name): the short name the pods dial, and the namespaced and cluster-wide forms (none
    without a namespace)."""
    if not namespace:
        return [service]
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def statefulset_names(name: str, headless: str, namespace: str, replicas: Any) -> list[str]:
    """Filter: the names of a StatefulSet's pods through its headless Service (<name>-<i>.<headless>.<namespace>.svc,
    and the .cluster.local form), what a replica dials to follow pod 0."""
    names: list[str] = []
    for index in range(int(replicas)):
        pod = f"{name}-{index}.{headless}.{namespace}.svc"
        names += [pod, f"{pod}.cluster.local"]
    return names


def pod_data_client(service: str, mode: Any, client_tls: dict[str, Any], endpoint: dict[str, Any]) -> dict[str, Any]:
    """Filter: how the platform's pods reach `service` ('postgres' or 'redis'): {data, ca_file}.

    data is the ConfigMap <service>-client the pods read as environment: the host and port to dial and the TLS to use
    (PGSSLMODE/PGSSLROOTCERT for libpq, REDIS_TLS/REDIS_CA_FILE); ca_file is the controller's CA file to ship in it as
    ca.crt ('' for none: no TLS, or the pods' trust store).

    client_tls is what the toolkit's own clients use (postgres_client_tls, redis_client_tls): the pods verify the same
    way. They dial the Service, whose name the host-mode certificates carry (service_names), except a managed server
    verified by name: its certificate names its own endpoint, never the Service alias, so they dial the endpoint
    (endpoint: {host, port}, the server the Service points at; a DR switch points both at the promoted one).
    """
    if service not in SERVICE_PORTS:
        raise AnsibleFilterError(f"pod_data_client: unknown service {service!r}")
    ca_dir = f"{POD_CA_DIR}/{service}"
    if service == "postgres":
        sslmode = str(client_tls.get("sslmode") or "prefer")
        rootcert = str(client_tls.get("sslrootcert") or "")
        by_name = mode == "external" and sslmode == "verify-full"
        data = {"PGSSLMODE": sslmode}
        if rootcert == "system":
            data["PGSSLROOTCERT"] = "system"
        elif rootcert:
            data["PGSSLROOTCERT"] = f"{ca_dir}/ca.crt"
        ca_file = "" if rootcert == "system" else rootcert
    else:
        on = client_tls.get("tls") is True
        ca_file = str(client_tls.get("ca_file") or "") if on else ""
        by_name = mode == "external" and on
        data = {"REDIS_TLS": "true" if on else "false"}
        if ca_file:
            data["REDIS_CA_FILE"] = f"{ca_dir}/ca.crt"
    prefix = service.upper()
    host, port = (str(endpoint["host"]), str(endpoint["port"])) if by_name else (service, str(SERVICE_PORTS[service]))
    return {"data": {f"{prefix}_HOST": host, f"{prefix}_PORT": port, **data}, "ca_file": ca_file}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sapphire_subject_alt_names": subject_alt_names, "sapphire_postgres_client_tls": postgres_client_tls,
                "sapphire_redis_client_tls": redis_client_tls, "sapphire_service_names": service_names,
                "sapphire_pod_data_client": pod_data_client,
                "sapphire_statefulset_names": statefulset_names}
