"""postgres role, host mode: a real primary and streaming standby from the distribution packages.

One pair per module on free ports under tmp_path (never the local default's 15432/15433),
converged once; the tests then check what an operator relies on: the tuning in effect,
streaming replication, the schema, idempotence, an honest and secret-free --check --diff,
bad input rejected before anything is written, and promotion of the standby.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import testinfra
import yaml
from conftest import load_library_module
from cryptography import x509
from sapphire_testlib import postgres_admin, postgres_app, postgres_privilege_problems, sign_again

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CONVERGE = "molecule/postgres/converge.yml"
PROMOTE = "molecule/postgres/promote.yml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TABLES = ["trades", "agent_decisions", "signals", "liquidations", "whale_transactions"]

if not (PG_BIN / "postgres").exists():
    pytest.skip("postgresql-15 is not installed (make setup / tools/setup-packages)", allow_module_level=True)


def free_port(exclude: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in exclude and port not in (15432, 15433):
            return port


@dataclass
class Pair:
    root: Path
    inventory: Path
    local_dir: Path
    ports: dict[str, int]
    secrets: dict[str, str]
    run: Callable[..., Any]

    def base(self, host: str) -> Path:
        return self.local_dir / "postgres" / host

    def admin(self, host: str, dbname: str = "sapphire") -> psycopg.Connection:
        """Superuser over the instance's socket (peer, root mapped to postgres)."""
        return postgres_admin(self.base(host), self.ports[host], dbname)

    def app(self, host: str) -> psycopg.Connection:
        """The platform's user over TCP with its password, as the coordinator connects."""
        return postgres_app(self.ports[host], self.secrets["postgres_password"])


def write_inventory(path: Path, local_dir: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    inventory = {"all": {
        "children": {"postgres_hosts": {"hosts": hosts}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "postgres_mode": "host", "sapphire_local_dir": str(local_dir),
                 "sapphire_namespace": "trading-system"},
    }}
    path.write_text(yaml.safe_dump(inventory))
    return path


def stop_server(data_dir: Path) -> None:
    if (data_dir / "postmaster.pid").exists():
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data_dir),
                        "stop", "-m", "fast", "-w", "-t", "60"], capture_output=True, check=False, timeout=90)


@pytest.fixture(scope="module")
def pair(playbook_runner: Callable[..., Any]) -> Iterator[Pair]:
    # Not pytest's tmp_path: every pytest session (other contributors run theirs at the same
    # time) chmods /tmp/pytest-of-root back to 0700 and prunes old session directories, which
    # would pull the data directory from under a running server.
    root = Path(tempfile.mkdtemp(prefix="sapphire-pg-host-"))
    root.chmod(0o755)
    local_dir = root / "local"
    primary_port = free_port(set())
    standby_port = free_port({primary_port})
    ports = {"pg-primary": primary_port, "pg-standby": standby_port}
    inventory = write_inventory(root / "hosts.yml", local_dir, {
        "pg-primary": {"postgres_port": primary_port, "postgres_replication_role": "primary",
                       "sapphire_region": "primary"},
        "pg-standby": {"postgres_port": standby_port, "postgres_replication_role": "standby",
                       "postgres_primary_host": "pg-primary", "sapphire_region": "dr"},
    })
    # The replication password carries the two characters a libpq passfile must escape.
    secrets = {"postgres_password": f"app-{uuid.uuid4().hex}",
               "postgres_replication_password": f"repl:{uuid.uuid4().hex}\\x",
               "postgres_agent_password": f"agent-{uuid.uuid4().hex}",
               "postgres_coordinator_password": f"coordinator-{uuid.uuid4().hex}",
               "postgres_monitor_password": f"monitor-{uuid.uuid4().hex}"}
    pg = Pair(root=root, inventory=inventory, local_dir=local_dir, ports=ports, secrets=secrets, run=playbook_runner)
    result = pg.run(CONVERGE, inventory, extra_vars=secrets)
    try:
        assert result.rc == 0, "converge failed:\n" + result.explain()
        yield pg
    finally:
        for host in ("pg-standby", "pg-primary"):
            stop_server(pg.base(host) / "data")
        shutil.rmtree(root, ignore_errors=True)


def test_servers_listen_on_their_ports_as_postgres(pair: Pair) -> None:
    host = testinfra.get_host("local://")
    for name, port in pair.ports.items():
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, f"{name} does not listen on {port}"
        data_dir = str(pair.base(name) / "data")
        postmasters = [p for p in host.process.filter(comm="postgres") if data_dir in p.args]
        assert postmasters, f"no postmaster for {data_dir}"
        assert {p.user for p in postmasters} == {"postgres"}


@pytest.mark.parametrize("host", ["pg-primary", "pg-standby"])
def test_seed_tuning_is_in_effect(pair: Pair, host: str) -> None:
    expected = {"max_connections": "200", "shared_buffers": "1GB", "effective_cache_size": "3GB",
                "work_mem": "5MB", "maintenance_work_mem": "256MB", "password_encryption": "scram-sha-256",
                "listen_addresses": "127.0.0.1"}
    with pair.app(host) as conn:
        for name, value in expected.items():
            assert conn.execute(f"SHOW {name}").fetchone()[0] == value, name


def test_the_five_tables_are_partitioned_with_indexes(pair: Pair) -> None:
    with pair.app("pg-primary") as conn:
        partitioned = {row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")}
        assert set(TABLES) <= partitioned
        for table in TABLES:
            parts = [row[0] for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (table,))]
            assert f"{table}_default" in parts
            assert any(re.fullmatch(rf"{table}_p\d{{8}}", p) for p in parts)
            indexes = [row[0] for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]
            assert any("(symbol, \"timestamp\" DESC)" in ix for ix in indexes), indexes
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (table,)).fetchone()
            assert owner == ("sapphire",)


def test_app_user_sees_replication_state_for_health_checks(pair: Pair) -> None:
    # validate's health module logs in as the platform's user: pg_monitor lets it read the lag.
    with pair.app("pg-primary") as conn:
        state = conn.execute("SELECT state FROM pg_stat_replication WHERE application_name = 'pg_standby'")
        assert state.fetchone() == ("streaming",)
        assert conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user").fetchone() \
            == (False, False)


def test_each_login_per_purpose_may_do_only_what_its_component_needs(pair: Pair) -> None:
    passwords = {"sapphire_agent": pair.secrets["postgres_agent_password"],
                 "sapphire_coordinator": pair.secrets["postgres_coordinator_password"],
                 "sapphire_monitor": pair.secrets["postgres_monitor_password"]}
    assert postgres_privilege_problems(pair.ports["pg-primary"], passwords) == []
    with pair.admin("pg-primary") as conn:
        attributes = conn.execute("SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication "
                                  "FROM pg_roles WHERE rolname = ANY (%s) ORDER BY rolname",
                                  (list(passwords),)).fetchall()
    assert attributes == [(name, False) for name in sorted(passwords)]


def test_tcp_logins_and_replication_speak_tls_verified_against_the_platform_ca(pair: Pair) -> None:
    ca = pair.local_dir / "pki" / "ca.crt"
    port = pair.ports["pg-primary"]
    login = {"host": "127.0.0.1", "port": port, "user": "sapphire_agent", "dbname": "sapphire",
             "password": pair.secrets["postgres_agent_password"], "connect_timeout": 10}
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(**login, sslmode="disable")
    with psycopg.connect(**login, sslmode="verify-full", sslrootcert=str(ca)) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with pair.admin("pg-primary") as conn:  # the standby streams over TLS too
        assert conn.execute("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)").fetchall() == [
            (True,)]
    for host in pair.ports:
        key = pair.base(host) / "conf" / "tls" / "server.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600" and key.owner() == "postgres", host
    assert oct((pair.local_dir / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_a_pod_verifies_the_server_by_the_names_of_the_service_it_dials(pair: Pair) -> None:
    """The platform's pods dial the Service postgres with verify-full (the ConfigMap postgres-client): libpq verifies
    the name they dial (host) while connecting to the server's address (hostaddr)."""
    login = {"hostaddr": "127.0.0.1", "port": pair.ports["pg-primary"], "user": "sapphire_agent", "dbname": "sapphire",
             "password": pair.secrets["postgres_agent_password"], "connect_timeout": 10, "sslmode": "verify-full",
             "sslrootcert": str(pair.local_dir / "pki" / "ca.crt")}
    for name in ("postgres", "postgres.trading-system.svc", "postgres.trading-system.svc.cluster.local"):
        with psycopg.connect(host=name, **login) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(host="redis", **login)


def test_deploy_signs_again_a_certificate_due_for_renewal_and_the_server_serves_it(pair: Pair) -> None:
    served_end = load_library_module("sapphire_postgres_info").served_certificate_end
    port = pair.ports["pg-primary"]
    path = pair.base("pg-primary") / "conf" / "tls" / "server.crt"
    sign_again(pair.local_dir, path, days=10)
    with pair.admin("pg-primary", "postgres") as conn:
        conn.execute("SELECT pg_reload_conf()")
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    deadline = time.monotonic() + 10
    while (served_end("127.0.0.1", port, 5) - now).days > 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (served_end("127.0.0.1", port, 5) - now).days < 11, "the server does not serve the 10-day certificate"

    result = pair.run(CONVERGE, pair.inventory, extra_vars=pair.secrets)
    assert result.rc == 0, result.explain()
    written = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    assert (written - now).days > 300, f"deploy kept a certificate that ends on {written}"
    deadline = time.monotonic() + 10
    while served_end("127.0.0.1", port, 5) != written and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_end("127.0.0.1", port, 5) == written, "the server still serves the old certificate (no reload)"
    ca = pair.local_dir / "pki" / "ca.crt"
    with psycopg.connect(host="127.0.0.1", port=port, user="sapphire_monitor", dbname="sapphire",
                         password=pair.secrets["postgres_monitor_password"], sslmode="verify-full",
                         sslrootcert=str(ca), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_backup_login_may_run_a_backup_over_the_socket_and_nothing_else(pair: Pair) -> None:
    """pgBackRest logs in as sapphire_backup (pg1-user): no superuser, no password, only from the postgres OS user
    over the socket; it may start and stop a backup and checkpoint, and may not even connect to the trading
    database."""
    # The database pgBackRest connects to (a function's grants are per database).
    with pair.admin("pg-primary", "postgres") as conn:
        assert conn.execute(
            "SELECT rolsuper, rolreplication, rolcanlogin, rolpassword IS NULL FROM pg_authid "
            "WHERE rolname = 'sapphire_backup'").fetchone() == (False, False, True, True)
        assert conn.execute(
            "SELECT pg_has_role('sapphire_backup', 'pg_checkpoint', 'member'), "
            "pg_has_role('sapphire_backup', 'pg_read_all_settings', 'member'), "
            "has_function_privilege('sapphire_backup', 'pg_backup_start(text, boolean)', 'EXECUTE'), "
            "has_function_privilege('sapphire_backup', 'pg_backup_stop(boolean)', 'EXECUTE')").fetchone() == (
                True, True, True, True)

    def as_backup(sql: str, dbname: str = "postgres") -> subprocess.CompletedProcess[str]:
        command = ["psql", "-h", str(pair.base("pg-primary") / "run"), "-p", str(pair.ports["pg-primary"]),
                   "-U", "sapphire_backup", "-d", dbname, "-Atqc", sql]
        return subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                              timeout=30, check=False)

    assert as_backup("SELECT current_user, pg_switch_wal() IS NOT NULL").stdout.strip() == "sapphire_backup|t"
    denied = as_backup("SELECT count(*) FROM trades", "sapphire")
    assert 'permission denied for database "sapphire"' in denied.stderr
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(host="127.0.0.1", port=pair.ports["pg-primary"], user="sapphire_backup", dbname="postgres",
                        password="anything", sslmode="require", connect_timeout=10)


def test_pg_hba_refuses_what_does_not_need_access(pair: Pair) -> None:
    # The platform's user may not use replication; the replication user may not read data.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=pair.ports["pg-primary"], user="replicator", dbname="sapphire",
                        password=pair.secrets["postgres_replication_password"], connect_timeout=5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=pair.ports["pg-primary"], user="sapphire", dbname="sapphire",
                        password="not-the-password", connect_timeout=5)


def test_standby_streams_from_its_slot(pair: Pair) -> None:
    with pair.admin("pg-standby", "postgres") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        status = conn.execute("SELECT status, slot_name FROM pg_stat_wal_receiver").fetchone()
        assert status == ("streaming", "pg_standby")
    with pair.admin("pg-primary", "postgres") as conn:
        rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
        assert ("pg_standby", "streaming", "async") in rows
        slot = conn.execute("SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = 'pg_standby'")
        assert slot.fetchone() == ("physical", True)


def test_row_written_on_primary_appears_on_standby(pair: Pair) -> None:
    order_id = f"test-{uuid.uuid4().hex[:16]}"
    with pair.app("pg-primary") as conn:
        conn.execute("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
                     "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, %s)", (order_id,))
    deadline = time.monotonic() + 30
    found = None
    with pair.app("pg-standby") as conn:
        while time.monotonic() < deadline:
            found = conn.execute("SELECT symbol FROM trades WHERE order_id = %s", (order_id,)).fetchone()
            if found:
                break
            time.sleep(0.5)
    assert found == ("BTCUSDT",)


def test_second_run_changes_nothing(pair: Pair) -> None:
    result = pair.run(CONVERGE, pair.inventory, extra_vars=pair.secrets)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, f"changed tasks: {result.changed_tasks()}"


def test_check_diff_changes_nothing_and_never_prints_a_password(pair: Pair) -> None:
    result = pair.run(CONVERGE, pair.inventory, extra_vars=pair.secrets, check=True, diff=True,
                          verbosity=3, json_output=False)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-4000:]
    recap = re.findall(r"^(pg-\w+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.MULTILINE)
    assert sorted(recap) == [("pg-primary", "0"), ("pg-standby", "0")], recap
    for secret in pair.secrets.values():
        core = re.sub(r"[^0-9a-f]", "", secret.split("-", 1)[-1].split(":", 1)[-1])
        assert len(core) == 32 and core not in output, "a password appears in the output"
    # The passfile and the server's configuration hold no password either, only the passfile does.
    assert pair.secrets["postgres_replication_password"] not in (pair.base("pg-standby") / "data" /
                                                                 "postgresql.auto.conf").read_text()
    passfile = pair.base("pg-standby") / "conf" / "pgpass"
    assert oct(passfile.stat().st_mode & 0o777) == "0o600"


def test_sync_mode_makes_the_primary_wait_for_the_standby(pair: Pair) -> None:
    result = pair.run(CONVERGE, pair.inventory, extra_vars={**pair.secrets, "postgres_synchronous_commit_mode": "sync"})
    try:
        assert result.rc == 0, result.explain()
        with pair.admin("pg-primary", "postgres") as conn:
            assert conn.execute("SHOW synchronous_standby_names").fetchone()[0] == "FIRST 1 (pg_standby)"
            deadline = time.monotonic() + 30
            state = None
            while time.monotonic() < deadline:
                state = conn.execute("SELECT sync_state FROM pg_stat_replication "
                                     "WHERE application_name = 'pg_standby'").fetchone()
                if state == ("sync",):
                    break
                time.sleep(0.5)
            assert state == ("sync",)
    finally:
        back = pair.run(CONVERGE, pair.inventory, extra_vars=pair.secrets)
        assert back.rc == 0, back.explain()


def test_port_in_use_is_rejected_before_writing(pair: Pair) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        inventory = write_inventory(pair.root / "busy.yml", pair.local_dir, {
            "pg-busy": {"postgres_port": port, "postgres_replication_role": "primary"}})
        result = pair.run(CONVERGE, inventory, extra_vars=pair.secrets)
    assert result.rc != 0
    messages = "\n".join(result.failure_messages())
    assert "postgres_port" in messages and str(port) in messages, messages
    assert f"pid {os.getpid()})" in " ".join(messages.split()), messages  # the process that holds it: this test
    assert not pair.base("pg-busy").exists(), "the role wrote before rejecting the port"


def test_data_dir_of_another_cluster_is_rejected_untouched(pair: Pair) -> None:
    data_dir = pair.base("pg-foreign") / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("14\n")
    (data_dir / "precious").write_text("keep me")
    before = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    inventory = write_inventory(pair.root / "foreign.yml", pair.local_dir, {
        "pg-foreign": {"postgres_port": free_port(set(pair.ports.values())), "postgres_replication_role": "primary"}})
    result = pair.run(CONVERGE, inventory, extra_vars=pair.secrets)
    assert result.rc != 0
    messages = "\n".join(result.failure_messages())
    assert "PG_VERSION 14" in messages and "postgres_base_dir" in messages, messages
    assert {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()} == before
    assert not (pair.base("pg-foreign") / "conf").exists()


def test_standby_over_a_foreign_cluster_is_rejected(pair: Pair) -> None:
    """A data directory initialised elsewhere is not a copy of the primary: never overwritten."""
    base = pair.base("pg-stranger")
    data_dir = base / "data"
    base.mkdir(parents=True)
    os.chown(base, *_postgres_ids())
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data_dir), "-A", "peer"],
                   check=True, capture_output=True, timeout=120)
    before = (data_dir / "global" / "pg_control").read_bytes()
    port = free_port(set(pair.ports.values()))
    hosts = yaml.safe_load(pair.inventory.read_text())["all"]["children"]["postgres_hosts"]["hosts"]
    hosts["pg-stranger"] = {"postgres_port": port, "postgres_replication_role": "standby",
                            "postgres_primary_host": "pg-primary"}
    inventory = write_inventory(pair.root / "stranger.yml", pair.local_dir, hosts)
    result = pair.run(CONVERGE, inventory, extra_vars=pair.secrets, limit="pg-stranger")
    assert result.rc != 0
    messages = "\n".join(result.failure_messages())
    assert "not a copy of pg-primary" in messages, messages
    assert (data_dir / "global" / "pg_control").read_bytes() == before
    assert not (base / "conf").exists()


def test_missing_vault_password_is_rejected(pair: Pair) -> None:
    result = pair.run(CONVERGE, pair.inventory,
                          extra_vars={"postgres_replication_password": pair.secrets["postgres_replication_password"]})
    assert result.rc != 0
    assert "postgres_password" in result.stdout + result.stderr


def test_promote_refuses_a_primary(pair: Pair) -> None:
    result = pair.run(PROMOTE, pair.inventory, extra_vars={**pair.secrets, "postgres_promote_hosts": "pg-primary"})
    assert result.rc != 0
    assert "not a standby" in "\n".join(result.failure_messages())


def test_promote_turns_the_standby_into_a_writable_primary(pair: Pair) -> None:
    result = pair.run(PROMOTE, pair.inventory, extra_vars=pair.secrets)
    assert result.rc == 0, result.explain()
    assert any(name.endswith("Promote the standby to a primary") for name in result.changed_tasks())
    with pair.app("pg-standby") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        conn.execute("INSERT INTO signals (timestamp, symbol, agent_id, signal, strength) "
                     "VALUES (now(), 'ETHUSDT', 'breakout', 'long', 0.8)")
        assert conn.execute("SELECT count(*) FROM signals WHERE symbol = 'ETHUSDT'").fetchone()[0] == 1


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid
