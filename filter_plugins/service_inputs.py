"""Controller-side filters: everything wrong with the inputs of the redis, postgres and monitoring roles (and the
namespace role's own settings), in one pass.

Each role's preflight is one assert over its filter (one task per host instead of a chain of asserts), and a refusal
lists every problem at once, each naming its variable. A secret is passed in to be checked, never shown: no message
carries a value of redis_password, postgres_password, postgres_replication_password or sapphire_telegram_bot_token.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleFilterError


def _sibling(name: str) -> ModuleType:
    """A filter file of this directory (plugin files are not importable by name)."""
    path = Path(__file__).parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"sapphire_service_inputs_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_inputs = _sibling("inputs")
_quantities = _sibling("sapphire")
_netpol = _sibling("netpol")

REDIS_MEMORY = re.compile(r"^[0-9]+([kmg]b?|b)?$", re.IGNORECASE)
PROMETHEUS_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
COMPONENT = re.compile(r"^[a-z0-9_-]+$")
LOOPBACK = re.compile(r"^(127\.|localhost$|::1$)")
THRESHOLD = re.compile(r"^monitoring_alert_.*_(ratio|seconds|usd)$")
ALERT_DURATION = re.compile(r"^monitoring_alert_.*_for$")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: Any, fallback: int = 0) -> int:
    """A whole number from YAML or from a string (-e k=v, a survey); the fallback when it is neither."""
    if _is_integer(value):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return fallback


def _secret_set(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, str) and len(value) >= minimum


def _resources_valid(resources: Any) -> bool:
    """requests and limits with cpu and memory as quantities, requests not above limits."""
    if not isinstance(resources, dict):
        return False
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if not isinstance(requests, dict) or not isinstance(limits, dict):
        return False
    for resource in ("cpu", "memory"):
        wanted, allowed = requests.get(resource, ""), limits.get(resource, "")
        if not (_quantities.is_quantity(wanted) and _quantities.is_quantity(allowed)):
            return False
        if _quantities.quantity(wanted) > _quantities.quantity(allowed):
            return False
    return True


# The passwords of the ACL users per purpose (roles/redis/vars/main.yml __redis_acl_users).
REDIS_USER_PASSWORDS = ("redis_agent_password", "redis_replication_password", "redis_monitor_password")
# Their names, and what a name may be: no space (an ACL rule is space-separated) and no rule prefix (>, <, ~, &, %).
REDIS_USERS = ("redis_agent_user", "redis_replication_user", "redis_monitor_user")
REDIS_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
# A key pattern the agents may write: one ACL key pattern, no space.
REDIS_KEY_PATTERN = re.compile(r"^[^\s~%&<>]+$")


def _redis_identity_problems(values: dict[str, Any], mode: Any) -> list[str]:
    """The ACL user names and the agents' write patterns. A server of our own (host, kubernetes) defines the users, so
    each needs a name of its own and none may be `default` (the administrator). A managed Redis with one AUTH string
    maps every purpose to `default` in its inventory, so there only the form of a name is checked."""
    problems = []
    names = {name: values.get(name) for name in REDIS_USERS if name in values}
    bad = [name for name, user in names.items() if not (isinstance(user, str) and REDIS_USER_NAME.match(user))]
    if bad:
        problems.append(f"{', '.join(bad)} must be a Redis ACL user name (letters, digits, _ . : @ -; up to 64).")
    if mode != "external":
        named = [user for name, user in names.items() if name not in bad]
        if "default" in named or len(set(named)) != len(named):
            got = ", ".join(map(str, named))
            problems.append(f"{', '.join(names)} must be three different users and none 'default' (the "
                            f"administrator, redis_password) when redis_mode is {mode}; got {got}.")
    if "redis_agent_write_keys" in values:
        keys = values.get("redis_agent_write_keys")
        if (not isinstance(keys, list) or not keys
                or not all(isinstance(key, str) and REDIS_KEY_PATTERN.match(key) for key in keys)):
            problems.append(f"redis_agent_write_keys must be a list of one or more Redis key patterns without spaces "
                            f"(such as sapphire:agent:*); got {keys!r}.")
    return problems


def _ca_file_problem(name: str, path: Any) -> str | None:
    """A CA file the controller verifies a server against: it must be a readable file of PEM certificates (a wrong
    path would only show as "certificate verify failed" in the middle of a run, or a DR)."""
    try:
        with open(str(path), encoding="utf-8", errors="replace") as handle:
            if "-----BEGIN CERTIFICATE-----" in handle.read(1 << 20):
                return None
        return f"{name} = {path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA bundle file."
    except OSError as exc:
        return f"{name} = {path!r} cannot be read on the controller ({exc.strerror}): give the CA bundle file."


def redis_input_problems(values: dict[str, Any], on_cluster: bool, on_redis_host: bool, host: str,
                         redis_hosts: list[str], endpoints: list[str], digests_required: Any,
                         vault_hint: str) -> list[str]:
    """Filter: what is wrong with the redis role's variables ({name: value}) for this host.

    on_cluster / on_redis_host: the host is in group clusters / redis_hosts; endpoints: the hosts of group
    redis_endpoints (the managed endpoint of each region).
    """
    problems = []
    mode = values.get("redis_mode")
    if not _secret_set(values.get("redis_password")):
        problems.append(f"redis_password is empty: {vault_hint}")
    unset = [name for name in REDIS_USER_PASSWORDS if name in values and not _secret_set(values.get(name), 8)]
    if unset:
        problems.append(f"{', '.join(unset)} must be set (8+ characters): define "
                        f"{', '.join('vault_' + name for name in unset)} in the vault file sapphire_vault_file names "
                        "(a Redis with one AUTH string maps them to redis_password in its inventory).")
    problems += _redis_identity_problems(values, mode)
    if mode == "kubernetes":
        problems += _inputs.image_problems({name: values.get(name) for name in ("redis_image", "redis_exporter_image")},
                                           digests_required)
    maxmemory = values.get("redis_maxmemory")
    if not REDIS_MEMORY.match(str(maxmemory)):
        problems.append(f"redis_maxmemory = '{maxmemory}' is not a Redis memory size (examples: 2gb, 512mb, 0 for no "
                        "limit)")
    if on_cluster and mode == "kubernetes":
        bad = [f"{name} = {values.get(name)!r} is not valid."
               for name in ("redis_resources", "redis_exporter_resources") if not _resources_valid(values.get(name))]
        replicas, storage = values.get("redis_replicas"), values.get("redis_storage_size")
        if bad or _as_int(replicas) < 1 or not _quantities.is_quantity(storage):
            problems.append(" ".join([*bad, f"redis_replicas ({replicas}) must be at least 1 and redis_storage_size "
                                            f"({storage}) a Kubernetes quantity; requests and limits need cpu and "
                                            "memory as quantities (500m, 2, 384Mi, 3Gi) with requests not above "
                                            "limits."]))
    if on_cluster and mode == "external":
        port = _as_int(values.get("redis_external_port"), -1)  # 6380 from YAML, "6380" from -e or a survey
        if not (values.get("redis_external_host") or endpoints) or not 0 < port < 65536:
            problems.append("redis_mode is external: declare the endpoint of each region (hosts of group "
                            "redis_endpoints with sapphire_region, redis_external_host, redis_replication_role) or "
                            "set redis_external_host (DNS name or IP of the managed Redis); redis_external_port a "
                            "port number.")
    if mode == "host" and values.get("redis_tls") is True and "redis_tls_ca_file" in values \
            and not values.get("redis_tls_ca_file"):
        problems.append("redis_tls is on: set redis_tls_ca_file to the platform CA's certificate on the controller "
                        "(default <sapphire_local_dir>/pki/ca.crt), which the toolkit's clients verify the servers "
                        "against.")
    if mode == "external" and values.get("redis_external_tls") is True and values.get("redis_external_tls_ca_file"):
        problem = _ca_file_problem("redis_external_tls_ca_file", values["redis_external_tls_ca_file"])
        problems += [problem] if problem else []
    replica_of = values.get("redis_replica_of") or ""
    if (on_redis_host and mode == "host" and values.get("redis_replication_role") == "replica"
            and (replica_of not in redis_hosts or replica_of == host)):
        problems.append(f"{host} has redis_replication_role replica: set redis_replica_of to the inventory name of its "
                        f"primary in group redis_hosts (got '{replica_of}')")
    return problems


# The owner's, the replication user's and one password per purpose's login (roles/postgres/vars/main.yml).
POSTGRES_PASSWORDS = ("postgres_password", "postgres_replication_password", "postgres_agent_password",
                      "postgres_coordinator_password", "postgres_monitor_password")
# Their names: plain lower-case identifiers (written into SQL, pg_hba and pgpass unquoted), not reserved.
POSTGRES_USERS = ("postgres_user", "postgres_replication_user", "postgres_agent_user", "postgres_coordinator_user",
                  "postgres_monitor_user", "postgres_backup_user")
POSTGRES_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
POSTGRES_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The administrative login is the server's or the provider's (an RDS master user may have capitals).
POSTGRES_LOGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _postgres_identity_problems(values: dict[str, Any]) -> list[str]:
    """Each purpose's login needs a name of its own: a shared one would give, say, the agents the owner's rights, and
    the fence would lock the wrong set of logins."""
    names = {name: values.get(name) for name in POSTGRES_USERS if name in values}
    bad = [name for name, user in names.items()
           if not (isinstance(user, str) and POSTGRES_ROLE_NAME.match(user))
           or user == "postgres" or user.startswith("pg_")]
    problems = []
    if bad:
        problems.append(f"{', '.join(bad)} must be a PostgreSQL role name (lower case, digits and _, up to 63, not "
                        "postgres and not starting with pg_).")
    named = [user for name, user in names.items() if name not in bad]
    if len(set(named)) != len(named):
        problems.append(f"{', '.join(names)} must be {len(names)} different logins (one per purpose); got "
                        f"{', '.join(named)}.")
    admin = values.get("postgres_admin_user")  # empty: the mode's default (postgres, or postgres_user)
    if admin is not None and admin != "" and not (isinstance(admin, str) and POSTGRES_LOGIN_NAME.match(admin)):
        problems.append(f"postgres_admin_user {admin!r} must be empty or a login name (letters, digits and _, up to "
                        "63, not starting with a digit).")
    return problems


def _postgres_cluster_admin_problems(values: dict[str, Any]) -> list[str]:
    """Kubernetes mode: the server's bootstrap superuser is a login of its own, so that the owner is none."""
    problems = []
    if not _secret_set(values.get("postgres_admin_password"), 8):
        problems.append("postgres_admin_password must be set (8+ characters) in kubernetes mode: the password of the "
                        "server's bootstrap superuser (postgres_admin_user, default postgres; the owner postgres_user "
                        "is no superuser): define vault_postgres_admin_password in the vault file.")
    admin = values.get("postgres_admin_user")  # empty: postgres, which no platform login may be called
    if admin and admin in {values.get(name) for name in POSTGRES_USERS}:
        problems.append(f"postgres_admin_user {admin!r} must not be one of the platform's logins in kubernetes mode "
                        "(it is the server's superuser; the owner postgres_user is none).")
    return problems


def postgres_input_problems(values: dict[str, Any], on_cluster: bool, endpoints: list[str], tables: list[str],
                            digests_required: Any) -> list[str]:
    """Filter: what is wrong with the postgres role's variables ({name: value}) for this host.

    on_cluster: the host is in group clusters; endpoints: the hosts of group postgres_endpoints; tables: the
    time-partitioned tables every retention must cover.
    """
    problems = []
    mode = values.get("postgres_mode")
    unset = [name for name in POSTGRES_PASSWORDS if not _secret_set(values.get(name), 8)]
    if unset:
        problems.append(f"{', '.join(unset)} must be set (8+ characters): define "
                        f"{', '.join('vault_' + name for name in unset)} in the vault file "
                        "sapphire_vault_file names (vault/<env>.yml, `make vault` for the local default).")
    problems += _postgres_identity_problems(values)
    if on_cluster and mode == "kubernetes":
        problems += _inputs.image_problems(
            {name: values.get(name) for name in ("postgres_image", "postgres_exporter_image")}, digests_required)
        problems += _postgres_cluster_admin_problems(values)
    retention = values.get("postgres_retention_days")
    if (not isinstance(retention, dict) or any(table not in retention for table in tables)
            or not all(_is_integer(days) and days > 0 for days in retention.values())):
        problems.append(f"postgres_retention_days needs a positive number of days for each of {', '.join(tables)}; "
                        f"got {retention}.")
    if mode == "external" and "postgres_external_sslmode" in values:
        sslmode, rootcert = values.get("postgres_external_sslmode"), values.get("postgres_external_sslrootcert")
        if sslmode not in POSTGRES_SSLMODES:
            problems.append(f"postgres_external_sslmode must be one of {', '.join(POSTGRES_SSLMODES)}; "
                            f"got {sslmode!r}.")
        elif sslmode in ("verify-ca", "verify-full") and not rootcert:
            problems.append(f"postgres_external_sslmode {sslmode} needs postgres_external_sslrootcert: a CA bundle "
                            "file on the controller, or system for its trust store.")
        elif sslmode in ("verify-ca", "verify-full") and rootcert != "system":
            problem = _ca_file_problem("postgres_external_sslrootcert", rootcert)
            problems += [problem] if problem else []
    if on_cluster and mode == "external" and not (values.get("postgres_external_host") or endpoints):
        problems.append("postgres_mode is external: declare the endpoint of each region (hosts of group "
                        "postgres_endpoints with sapphire_region, postgres_external_host, postgres_replication_role) "
                        "or set postgres_external_host to the one endpoint (DNS name or IP).")
    return problems


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9.]+", value):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def monitoring_input_problems(values: dict[str, Any], on_cluster: bool, on_monitoring_host: bool,
                              digests_required: Any) -> list[str]:
    """Filter: what is wrong with the monitoring role's variables for this host.

    values holds every monitoring_alert_* variable (the thresholds *_ratio, *_seconds, *_usd and the durations *_for
    are found by name) and the role's other inputs; on_cluster / on_monitoring_host: the host is in group clusters /
    monitoring_hosts.
    """
    problems = []
    mode = values.get("monitoring_mode")
    bad_thresholds = []
    for name in sorted(name for name in values if THRESHOLD.match(name)):
        number = _positive_number(values[name])
        if number is None or number <= 0 or (name.endswith("_ratio") and number > 1):
            bad_thresholds.append(f"{name}={values[name]}")
    if bad_thresholds:
        problems.append(f"Bad alert threshold: {', '.join(bad_thresholds)}. Thresholds are positive numbers and the "
                        "*_ratio ones at most 1 (0.05 means 5 %).")
    durations = [*sorted(name for name in values if ALERT_DURATION.match(name)), "monitoring_prometheus_retention"]
    bad_durations = [f"{name}={values.get(name)}" for name in durations
                     if not PROMETHEUS_DURATION.match(str(values.get(name)))]
    if bad_durations:
        problems.append(f"Bad duration: {', '.join(bad_durations)}. Use a Prometheus duration such as 30s, 5m or 1h.")
    components = values.get("monitoring_backup_components")
    if (not isinstance(components, list) or not components
            or not all(isinstance(item, str) and COMPONENT.match(item) for item in components)):
        problems.append("monitoring_backup_components must list component names such as postgres and redis (lower "
                        "case, digits, - and _).")
    if mode == "kubernetes":
        problems += _inputs.image_problems(
            {name: values.get(name) for name in ("monitoring_prometheus_image", "monitoring_alertmanager_image",
                                                 "monitoring_grafana_image")}, digests_required)
    outside = values.get("monitoring_external_prometheus_host") or ""
    if on_cluster and mode != "kubernetes" and outside and LOOPBACK.match(str(outside)):
        problems.append(f"monitoring_external_prometheus_host is {outside}, a loopback address pods cannot reach; give "
                        "the monitoring host's routable IP or DNS name, or leave it empty.")
    if on_monitoring_host and mode == "host":
        if _as_int(values.get("monitoring_telegram_chat_id")) != 0 and not _secret_set(
                values.get("sapphire_telegram_bot_token")):
            problems.append("monitoring_telegram_chat_id is set but sapphire_telegram_bot_token is empty; put "
                            "vault_telegram_bot_token in the inventory's vault file.")
        prometheus_port = _as_int(values.get("monitoring_prometheus_port"), -1)
        if prometheus_port == _as_int(values.get("monitoring_alertmanager_port"), -2):
            problems.append(f"prometheus_port and alertmanager_port are both {prometheus_port}; give each its own "
                            "port.")
    return problems


POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")


def namespace_settings_problems(namespace: Any, forbidden: list[str], quota: Any, pod_security_level: Any,
                                cidrs: dict[str, Any], exchange_except: Any) -> list[str]:
    """Filter: what is wrong with sapphire_namespace, namespace_quota, namespace_pod_security_level and the network
    policies' address lists (cidrs: {variable: [CIDR, ...]}; namespace_exchange_egress_cidrs is read with
    namespace_exchange_egress_except), each named by its variable."""
    problems = []
    if not isinstance(namespace, str) or len(namespace) > 63 or not _inputs.DNS_1123_LABEL.match(namespace) \
            or namespace in forbidden:
        problems.append(f"sapphire_namespace '{namespace}' must be a DNS-1123 label and not one of "
                        f"{', '.join(forbidden)}")
    if not isinstance(quota, dict):
        problems.append(f"namespace_quota must be a mapping of resource names to quantities, not {quota!r}")
    else:
        problems += [f"namespace_quota.{name} ({value}) must be a Kubernetes quantity" for name, value in quota.items()
                     if not _quantities.is_quantity(value)]
    if pod_security_level not in POD_SECURITY_LEVELS:
        problems.append(f"namespace_pod_security_level ({pod_security_level}) must be restricted, baseline or "
                        "privileged")
    for variable, values in {**cidrs, "namespace_exchange_egress_except": exchange_except}.items():
        if not isinstance(values, list):
            problems.append(f"{variable} must be a list of CIDRs, not {values!r}")
            continue
        try:
            _netpol.ip_blocks(values, variable=variable)
        except AnsibleFilterError as exc:
            problems.append(str(exc))
    return problems


def port_conflicts(listeners: Any, servers: list[dict[str, Any]], own_pids: list[Any]) -> list[str]:
    """Filter: a sentence for each server whose port another process listens on.

    listeners: community.general.listen_ports_facts' tcp_listen ({port, pid, name, ...}); servers: {port_var, port}
    each; own_pids: the pid of the process each server is (its pidfile or its unit's MainPID; empty when it runs not).
    """
    problems = []
    for server, own in zip(servers, own_pids, strict=True):
        own = str(own or "").strip()
        others = sorted({f"{listener.get('name')} pid {listener.get('pid')}" for listener in listeners or []
                         if str(listener.get("port")) == str(server["port"]) and str(listener.get("pid")) != own})
        if others:
            problems.append(f"{server['port_var']} {server['port']} is already used by another process "
                            f"({', '.join(others)}).")
    return problems


class FilterModule:
    """sapphire-ops filters for the data services', monitoring's and the namespace's inputs."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_redis_input_problems": redis_input_problems,
                "sapphire_postgres_input_problems": postgres_input_problems,
                "sapphire_monitoring_input_problems": monitoring_input_problems,
                "sapphire_namespace_settings_problems": namespace_settings_problems,
                "sapphire_port_conflicts": port_conflicts}
