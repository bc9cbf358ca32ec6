"""PostgreSQL logins per purpose as SQL, for where no Ansible module can run them (the cluster's init Job).

The postgres role keeps what each login may do as data (``__postgres_logins`` and ``__postgres_grants`` in
``roles/postgres/vars/main.yml``). On hosts and managed servers community.postgresql applies it; in the cluster the
init Job runs the SQL this filter renders with psql, as the database's owner. The passwords never enter the SQL: psql
reads each one from the environment variable its login names (``\\getenv``, psql 15), which the Job takes from the
login's Secret.
"""

from __future__ import annotations

import re
from typing import Any

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE"}


def _ident(name: Any) -> str:
    """A quoted SQL identifier (double quotes doubled)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"not an SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def grant_statement(grant: dict[str, Any]) -> str:
    """GRANT for one entry of __postgres_grants: {role, tables, privs, columns?}."""
    privs = [str(priv).upper() for priv in grant["privs"]]
    unknown = sorted(set(privs) - _PRIVILEGES)
    if unknown or not privs:
        raise ValueError(f"grant to {grant['role']}: privileges must be among {sorted(_PRIVILEGES)}, got {privs}")
    columns = grant.get("columns") or []
    column_list = f" ({', '.join(_ident(column) for column in columns)})" if columns else ""
    privileges = ", ".join(f"{priv}{column_list}" for priv in privs)
    tables = ", ".join(_ident(table) for table in grant["tables"])
    return f"GRANT {privileges} ON TABLE {tables} TO {_ident(grant['role'])}"


def grants_sql(logins: list[dict[str, Any]], grants: list[dict[str, Any]], database: str) -> str:
    """Filter: the SQL that converges the logins (created when missing, attributes and password set every run),
    their CONNECT on the database, their memberships and their table privileges. Idempotent; a grant on a table
    that does not exist (the epoch fence before the first promotion) is skipped until it does. One transaction: a
    missing password or a failed grant leaves every login as it was (no rotation applied to some logins only)."""
    lines = ["-- Logins per purpose (sapphire-ops, roles/postgres/vars/main.yml); run by psql as the owner.",
             "\\set ON_ERROR_STOP on", "BEGIN;"]
    for login in logins:
        user, env = login["user"], login["env"]
        if not isinstance(env, str) or not _ENV_NAME.match(env):
            raise ValueError(f"login {user}: env must be an environment variable name, got {env!r}")
        missing = f"{env} is not set: the password of the login {user} (its Secret) is missing"
        lines += [
            f"\\getenv sapphire_password {env}",
            "\\if :{?sapphire_password}",
            "\\else",
            f"DO $$ BEGIN RAISE EXCEPTION {_literal(missing)}; END $$;",
            "\\endif",
            f"SELECT format('CREATE ROLE %I', {_literal(user)}) "  # noqa: S608 - quoted literals, psql script
            f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(user)})",
            "\\gexec",
            f"ALTER ROLE {_ident(user)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "PASSWORD :'sapphire_password';",
            "\\unset sapphire_password",
            f"GRANT CONNECT ON DATABASE {_ident(database)} TO {_ident(user)};",
        ]
        lines += [f"GRANT {_ident(group)} TO {_ident(user)};" for group in login.get("groups") or []]
    for grant in grants:
        tables = " AND ".join(f"to_regclass({_literal('public.' + _ident(table))}) IS NOT NULL"
                              for table in grant["tables"])
        lines += [f"SELECT {_literal(grant_statement(grant))} WHERE {tables}", "\\gexec"]
    return "\n".join([*lines, "COMMIT;"]) + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sapphire_postgres_grants_sql": grants_sql,
                "sapphire_postgres_grant_statement": grant_statement}
