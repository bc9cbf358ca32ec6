"""The SQL of the logins per purpose (filter_plugins/postgres_grants.py), as the cluster's init Job runs it.

What it does on a real server is in tests/integration/test_postgres_identities.py; here: quoting, refusals, and that
the SQL carries no password.
"""

from __future__ import annotations

import pytest
from conftest import load_module
from sapphire_testlib import postgres_role_logins

grants = load_module("postgres_grants", "filter_plugins")


def test_a_grant_quotes_every_identifier() -> None:
    statement = grants.grant_statement({"role": 'odd"name', "tables": ["trades", "agent decisions"],
                                        "privs": ["select", "INSERT"]})
    assert statement == 'GRANT SELECT, INSERT ON TABLE "trades", "agent decisions" TO "odd""name"'


def test_a_column_grant_names_its_columns() -> None:
    statement = grants.grant_statement({"role": "sapphire_agent", "tables": ["sapphire_epoch"], "privs": ["UPDATE"],
                                        "columns": ["singleton"]})
    assert statement == 'GRANT UPDATE ("singleton") ON TABLE "sapphire_epoch" TO "sapphire_agent"'


@pytest.mark.parametrize("privs", [["TRUNCATE"], ["ALL"], ["SELECT", "DROP"], []])
def test_privileges_beyond_reading_and_writing_rows_are_refused(privs: list[str]) -> None:
    with pytest.raises(ValueError, match="privileges must be among"):
        grants.grant_statement({"role": "sapphire_agent", "tables": ["trades"], "privs": privs})


@pytest.mark.parametrize("name", ["", None, "a\x00b"])
def test_an_empty_or_broken_identifier_is_refused(name: object) -> None:
    with pytest.raises(ValueError, match="not an SQL identifier"):
        grants.grant_statement({"role": name, "tables": ["trades"], "privs": ["SELECT"]})


@pytest.mark.parametrize("env", ["lower_case", "WITH-DASH", "1ST", "", None])
def test_a_password_variable_that_is_not_an_environment_name_is_refused(env: object) -> None:
    with pytest.raises(ValueError, match="env must be an environment variable name"):
        grants.grants_sql([{"user": "sapphire_agent", "env": env}], [], "sapphire")


def test_the_role_s_logins_render_without_a_password_and_read_each_from_its_variable() -> None:
    logins, role_grants = postgres_role_logins()
    sql = grants.grants_sql(logins, role_grants, "sapphire")
    assert "PASSWORD '" not in sql
    for login in logins:
        assert f"\\getenv sapphire_password {login['env']}\n" in sql
        assert f'GRANT CONNECT ON DATABASE "sapphire" TO "{login["user"]}";' in sql
    assert 'GRANT "pg_monitor" TO "sapphire_monitor";' in sql
    # The fence table may not exist yet: its grants wait for it instead of failing.
    assert ("""SELECT 'GRANT SELECT ON TABLE "sapphire_epoch" TO "sapphire_monitor"' """
            """WHERE to_regclass('public."sapphire_epoch"') IS NOT NULL""") in sql
