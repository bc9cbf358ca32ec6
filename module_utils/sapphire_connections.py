# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs and clients shared by the sapphire_*_info modules.

Every module that talks to Redis takes the same `redis_*` options, every module that
talks to PostgreSQL the same `postgres_*` options, every HTTP module `url`, `timeout`,
`validate_certs`, `ca_path`. Connection errors are turned into sentences that say what
to fix; they are reported as failing checks by the modules, never raised to Ansible.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import open_url

try:
    import redis
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None
except ImportError:
    redis = None
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()

try:
    import psycopg
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError:
    psycopg = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

try:
    from urllib.error import HTTPError, URLError
except ImportError:  # pragma: no cover - python 2 is not supported
    HTTPError = URLError = Exception

REDIS_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "redis_host": {"type": "str", "default": "127.0.0.1"},
    "redis_port": {"type": "int", "default": 6379},
    "redis_username": {"type": "str"},
    "redis_password": {"type": "str", "no_log": True},
    "redis_db": {"type": "int", "default": 0},
    "redis_tls": {"type": "bool", "default": False},
    "redis_tls_ca_path": {"type": "path"},
    "redis_tls_verify": {"type": "bool", "default": True},
}

POSTGRES_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "postgres_host": {"type": "str", "default": "127.0.0.1"},
    "postgres_port": {"type": "int", "default": 5432},
    "postgres_user": {"type": "str", "default": "sapphire"},
    "postgres_password": {"type": "str", "no_log": True},
    "postgres_database": {"type": "str", "default": "sapphire"},
    "postgres_sslmode": {"type": "str", "default": "prefer",
                         "choices": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
    "postgres_sslrootcert": {"type": "path"},
}

HTTP_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "url": {"type": "str", "required": True},
    "validate_certs": {"type": "bool", "default": True},
    "ca_path": {"type": "path"},
}

TIMEOUT_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "connect_timeout": {"type": "float", "default": 5.0},
}


def argument_spec(*parts: dict[str, dict[str, Any]], **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One module's argument spec from the shared pieces plus its own options."""
    spec: dict[str, dict[str, Any]] = {}
    for part in parts:
        spec.update({name: dict(option) for name, option in part.items()})
    spec.update(extra)
    return spec


def validate_params(module: Any, ports: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                    percents: tuple[str, ...] = (), positive: tuple[str, ...] = ()) -> None:
    """Range checks the argument spec cannot express; fail_json names the parameter."""
    params = module.params
    for name in ports:
        value = params.get(name)
        if value is not None and not 1 <= value <= 65535:
            module.fail_json(msg=f"argument '{name}' must be a TCP port between 1 and 65535, got {value}")
    for name in non_negative:
        value = params.get(name)
        if value is not None and (value < 0 or (isinstance(value, float) and math.isnan(value))):
            module.fail_json(msg=f"argument '{name}' must be zero or more, got {value}")
    for name in positive:
        value = params.get(name)
        if value is not None and not value > 0:
            module.fail_json(msg=f"argument '{name}' must be greater than zero, got {value}")
    for name in percents:
        value = params.get(name)
        if value is not None and not 0 < value <= 100:
            module.fail_json(msg=f"argument '{name}' must be a percentage in (0, 100], got {value}")


def require_redis(module: Any) -> None:
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)


def require_psycopg(module: Any) -> None:
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=PSYCOPG_IMPORT_ERROR)


def run_health_module(spec: dict[str, dict[str, Any]], run: Callable[[dict[str, Any]], dict[str, Any]], *,
                      needs: Iterable[str] | Callable[[dict[str, Any]], Iterable[str]] = (),
                      **ranges: tuple[str, ...]) -> None:
    """The main() of a read-only health module.

    Parses the options (check mode supported), applies the range checks of validate_params
    (`ranges`: ports, positive, non_negative, percents), makes sure the client libraries in
    `needs` ("redis", "psycopg"; or a function of the options naming them) are installed, runs
    the check and exits with its result. A ValueError from `run` is a bad option value: the
    module fails with its message, which names the option.
    """
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    validate_params(module, **ranges)
    for need in needs(module.params) if callable(needs) else needs:
        {"redis": require_redis, "psycopg": require_psycopg}[need](module)
    try:
        result = run(module.params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


def redis_endpoint(params: dict[str, Any]) -> str:
    return f"redis {params['redis_host']}:{params['redis_port']}"


def postgres_endpoint(params: dict[str, Any]) -> str:
    return f"postgres {params['postgres_host']}:{params['postgres_port']}/{params['postgres_database']}"


def redis_client(params: dict[str, Any]) -> Any:
    """A redis-py client (no I/O yet) built from the redis_* options."""
    timeout = params.get("connect_timeout") or 5.0
    kwargs: dict[str, Any] = {
        "host": params["redis_host"], "port": params["redis_port"], "db": params.get("redis_db") or 0,
        "username": params.get("redis_username"), "password": params.get("redis_password"),
        "socket_connect_timeout": timeout, "socket_timeout": timeout, "decode_responses": True,
    }
    if params.get("redis_tls"):
        kwargs.update(ssl=True, ssl_ca_certs=params.get("redis_tls_ca_path"),
                      ssl_cert_reqs="required" if params.get("redis_tls_verify", True) else "none")
    return redis.Redis(**kwargs)


def describe_redis_error(exc: BaseException, params: dict[str, Any]) -> str:
    """A sentence an operator can act on for a Redis client error."""
    where = redis_endpoint(params)
    text = str(exc)
    upper = text.upper()
    if (redis is not None and isinstance(exc, redis.exceptions.AuthenticationError)) or \
            "WRONGPASS" in upper or "NOAUTH" in upper or "INVALID PASSWORD" in upper:
        return (f"authentication failed ({text}); check redis_password (the vault's "
                "vault_redis_password) against the server's requirepass")
    if redis is not None and isinstance(exc, redis.exceptions.TimeoutError):
        return (f"timed out after {params.get('connect_timeout')}s ({text}); is the server overloaded or "
                "firewalled?")
    if redis is not None and isinstance(exc, redis.exceptions.ConnectionError):
        return f"cannot connect to {where} ({text}); is redis-server running and listening on that port?"
    return f"{type(exc).__name__}: {text}"


def postgres_connect(params: dict[str, Any]) -> Any:
    """An autocommit, read-only psycopg connection from the postgres_* options."""
    kwargs: dict[str, Any] = {
        "host": params["postgres_host"], "port": params["postgres_port"], "user": params["postgres_user"],
        "dbname": params["postgres_database"], "sslmode": params.get("postgres_sslmode") or "prefer",
        "connect_timeout": max(1, math.ceil(params.get("connect_timeout") or 5)),
        "application_name": "sapphire-ops-validate", "autocommit": True,
    }
    if params.get("postgres_password"):
        kwargs["password"] = params["postgres_password"]
    if params.get("postgres_sslrootcert"):
        kwargs["sslrootcert"] = params["postgres_sslrootcert"]
    conn = psycopg.connect(**kwargs)
    conn.execute("SET default_transaction_read_only = on")
    conn.execute("SET statement_timeout = 10000")
    return conn


def describe_postgres_error(exc: BaseException, params: dict[str, Any]) -> str:
    where = postgres_endpoint(params)
    text = " ".join(str(exc).split())
    if "password authentication failed" in text or "no password supplied" in text:
        return f"authentication failed for user {params['postgres_user']} ({text}); check postgres_password"
    if "does not exist" in text and "database" in text:
        return f"{text}; create the database (deploy.yml) or fix postgres_database"
    if "Connection refused" in text or "could not connect" in text or "connection failed" in text:
        return f"cannot connect to {where} ({text}); is PostgreSQL running and listening on that port?"
    return f"{type(exc).__name__}: {text}"


def http_get(url: str, params: dict[str, Any], accept: str = "*/*") -> tuple[int | None, str, str | None]:
    """GET url → (status, body, error). HTTP error statuses are returned, not raised."""
    timeout = params.get("connect_timeout") or 5.0
    try:
        response = open_url(url, method="GET", timeout=timeout, validate_certs=params.get("validate_certs", True),
                            ca_path=params.get("ca_path"), headers={"Accept": accept})
        return response.getcode(), response.read().decode("utf-8", "replace"), None
    except HTTPError as exc:
        body = ""
        try:
            body = exc.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            body = ""
        return exc.code, body, None
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, "", f"cannot reach {url}: {reason}"


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def parse_prometheus_text(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (a counter's with its _total) from the Prometheus text exposition format, label values
    unescaped (prometheus_client's parser); ValueError naming the line if malformed."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not the Prometheus text format: {exc}") from exc
    return samples
