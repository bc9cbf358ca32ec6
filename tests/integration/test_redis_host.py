"""redis role, host mode: a real primary and replica from the distribution's redis-server.

One pair per module on free loopback ports (never the local default's 16379/16380), converged
once with molecule/redis/converge.yml on a temporary inventory; the tests then check what an
operator relies on: sockets and process user, the seed-001 settings in effect, the replica
linked and replicating, idempotence (also after CONFIG REWRITE), an honest and secret-free
--check --diff, and bad input rejected before anything is written.

The instances' directory is a mkdtemp() under /tmp made traversable (0711): pytest's own
tmp_path lives below /tmp/pytest-of-root (0700), which the `redis` user cannot enter, and the
role refuses such a directory in its preflight (tested below).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import testinfra
import yaml
from cryptography import x509
from sapphire_testlib import redis_permission_problems, sign_again

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CONVERGE = "molecule/redis/converge.yml"
RESERVED_PORTS = {16379, 16380, 26379, 26380}

if not Path("/usr/bin/redis-server").exists():
    pytest.skip("redis-server is not installed (make setup / tools/setup-packages)", allow_module_level=True)


def free_port(exclude: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in exclude and port not in RESERVED_PORTS:
            return port


# The ACL users' passwords (roles/redis/vars/main.yml); the random part is searched for in the output.
USER_PASSWORDS = {name: f"{name.split('_')[1]}-{secrets.token_hex(16)}"
                  for name in ("redis_agent_password", "redis_replication_password", "redis_monitor_password")}


def write_inventory(path: Path, local_dir: Path, password: str, hosts: dict[str, dict[str, Any]]) -> Path:
    inventory = {"all": {
        "children": {"redis_hosts": {"hosts": hosts}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "redis_mode": "host", "sapphire_local_dir": str(local_dir), "redis_password": password,
                 "sapphire_namespace": "trading-system",
                 **USER_PASSWORDS},
    }}
    path.write_text(yaml.safe_dump(inventory))
    return path


def stop_instance(instance_dir: Path) -> None:
    """Stop a daemon the role started (pid file written by sapphire_daemon)."""
    try:
        pid = int((instance_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under root (to prove a failed run wrote nothing)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


@dataclass
class Pair:
    local_dir: Path
    inventory: Path
    password: str
    ports: dict[str, int]
    first: Any
    run: Callable[..., Any]

    def instance_dir(self, host: str) -> Path:
        return self.local_dir / "redis" / host

    @property
    def ca_file(self) -> str:
        return str(self.local_dir / "pki" / "ca.crt")

    def client(self, host: str, **kwargs: Any) -> redis.Redis:
        """The administrator over TLS, the server verified by chain and name against the platform CA."""
        return redis.Redis(host="127.0.0.1", port=self.ports[host], password=self.password, socket_timeout=5,
                           decode_responses=True, ssl=True, ssl_ca_certs=self.ca_file, **kwargs)


@pytest.fixture(scope="module")
def pair(playbook_runner: Callable[..., Any]) -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="sapphire-redis-test-"))
    root.chmod(0o711)
    local_dir = root / "local"
    # Quotes, a backslash and a space: the include file must escape them for redis.conf.
    password = f'redis "test" \\ {secrets.token_hex(8)}'
    ports = {"redis-test-primary": free_port(set())}
    ports["redis-test-replica"] = free_port(set(ports.values()))
    inventory = write_inventory(root / "hosts.yml", local_dir, password, {
        "redis-test-primary": {"redis_port": ports["redis-test-primary"], "redis_replication_role": "primary",
                               "sapphire_region": "primary"},
        "redis-test-replica": {"redis_port": ports["redis-test-replica"], "redis_replication_role": "replica",
                               "redis_replica_of": "redis-test-primary", "sapphire_region": "dr"},
    })
    first = playbook_runner(CONVERGE, inventory)
    the_pair = Pair(local_dir=local_dir, inventory=inventory, password=password, ports=ports, first=first,
                    run=playbook_runner)
    try:
        yield the_pair
    finally:
        for host in ports:
            stop_instance(the_pair.instance_dir(host))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def converged(pair: Pair) -> Pair:
    assert pair.first.rc == 0, "converge failed:\n" + pair.first.explain()
    return pair


def test_instances_listen_and_run_as_redis(converged: Pair) -> None:
    host = testinfra.get_host("local://")
    for name, port in converged.ports.items():
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, f"{name} does not listen on {port}"
        conf = str(converged.instance_dir(name) / "redis.conf")
        procs = [p for p in host.process.filter(comm="redis-server") if conf in p.args]
        assert len(procs) == 1, f"expected one redis-server for {conf}, found {[p.args for p in procs]}"
        assert procs[0].user == "redis"


def test_seed_settings_in_effect(converged: Pair) -> None:
    for name in converged.ports:
        client = converged.client(name)
        config = client.config_get("*")
        assert int(config["maxmemory"]) == 2 * 1024**3, name
        assert config["maxmemory-policy"] == "allkeys-lru", name
        assert config["appendonly"] == "yes", name
        assert config["save"] == "900 1 300 10 60 10000", name
        assert client.info("persistence")["aof_enabled"] == 1


def test_password_required_and_kept_out_of_the_main_config(converged: Pair) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=converged.ports["redis-test-primary"], socket_timeout=5, ssl=True,
                    ssl_ca_certs=converged.ca_file).ping()
    base = converged.instance_dir("redis-test-primary")
    assert converged.password not in (base / "redis.conf").read_text()
    auth = base / "auth.conf"
    assert oct(auth.stat().st_mode & 0o777) == "0o600"
    assert auth.stat().st_uid == pwd.getpwnam("redis").pw_uid


def test_clients_and_replication_speak_tls_verified_against_the_platform_ca(converged: Pair) -> None:
    port = converged.ports["redis-test-primary"]
    # The plain port is closed: a plaintext client gets no answer it can read.
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, password=converged.password, socket_timeout=3).ping()
    # A client that does not trust the platform CA refuses the server; one that does but dials a name the
    # certificate does not carry refuses it too.
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        redis.Redis(host="127.0.0.1", port=port, password=converged.password, socket_timeout=3, ssl=True).ping()
    assert converged.client("redis-test-primary").ping() is True
    for name in converged.ports:
        config = converged.client(name).config_get("tls-*")
        assert config["tls-replication"] == "yes" and config["tls-port"] == str(converged.ports[name]), name
        key = converged.instance_dir(name) / "tls" / "server.key"
        assert oct(key.stat().st_mode & 0o777) == "0o600" and key.owner() == "redis", name
    assert converged.client("redis-test-replica").info("replication")["master_link_status"] == "up"


def test_validate_reads_the_served_certificate_and_warns_within_the_renewal_window(converged: Pair) -> None:
    """sapphire_redis_info's redis_certificate: ok for a certificate of a year, warn once its end is within the
    window (a window longer than the certificate here), each saying when it ends."""
    from conftest import load_library_module

    redis_info = load_library_module("sapphire_redis_info")  # puts the repository's module_utils on the path
    from ansible.module_utils.sapphire_connections import redis_client
    params = {"redis_host": "127.0.0.1", "redis_port": converged.ports["redis-test-primary"],
              "redis_password": converged.password, "redis_username": None, "redis_db": 0, "redis_tls": True,
              "redis_tls_ca_path": converged.ca_file, "redis_tls_verify": True, "connect_timeout": 5.0,
              "expected_role": "primary", "min_replicas": 0, "max_replication_lag_bytes": 1048576,
              "max_replication_lag_seconds": 30.0, "memory_warn_percent": 80.0, "memory_fail_percent": 90.0,
              "expected_eviction_policy": None, "require_aof": False}

    def certificate_check(warn_days: int) -> dict[str, Any]:
        result = redis_info.collect({**params, "certificate_warn_days": warn_days}, redis_client)
        (check,) = [check for check in result["checks"] if check["name"] == "redis_certificate"]
        return check

    fresh, due = certificate_check(30), certificate_check(1000)
    assert fresh["status"] == "ok" and due["status"] == "warn", (fresh, due)
    end = served_certificate_end(converged.ports["redis-test-primary"]).strftime("%Y-%m-%d")
    assert end in fresh["msg"] and end in due["msg"], (fresh, due)


def handshake(port: int, ca_file: str, server_name: str) -> None:
    """A TLS handshake with the instance on 127.0.0.1 that verifies its certificate for `server_name`, as a pod that
    dials that name does."""
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name):
        pass


def test_a_pod_verifies_the_instance_by_the_names_of_the_service_it_dials(converged: Pair) -> None:
    """The platform's pods dial the Service redis (the ConfigMap redis-client): the certificate carries its names."""
    port = converged.ports["redis-test-primary"]
    for name in ("redis", "redis.trading-system.svc", "redis.trading-system.svc.cluster.local"):
        handshake(port, converged.ca_file, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(port, converged.ca_file, "postgres")


def served_certificate_end(port: int) -> datetime.datetime:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def test_a_certificate_due_for_renewal_is_signed_again_by_a_deploy_and_served_without_a_restart(
        converged: Pair) -> None:
    host, port = "redis-test-primary", converged.ports["redis-test-primary"]
    path = converged.instance_dir(host) / "tls" / "server.crt"
    pid = (converged.instance_dir(host) / "redis.pid").read_text().strip()
    sign_again(converged.local_dir, path, days=10)
    # A deploy whose renewal window is shorter keeps it, and records the host as converged with it.
    kept = converged.run(CONVERGE, converged.inventory, extra_vars={"pki_cert_renew_days": 5})
    assert kept.rc == 0, kept.explain()
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    assert (x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc - now).days < 11

    # The next deploy (30 days) finds it due although nothing else changed, signs it again, and Redis serves it.
    renewed = converged.run(CONVERGE, converged.inventory)
    assert renewed.rc == 0, renewed.explain()
    written = x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    assert (written - now).days > 300, f"deploy kept a certificate that ends on {written}"
    assert served_certificate_end(port) == written, "Redis still serves the old certificate"
    assert (converged.instance_dir(host) / "redis.pid").read_text().strip() == pid, "Redis was restarted"
    assert converged.client(host).ping() is True


def test_each_acl_user_may_do_only_what_its_purpose_needs(converged: Pair) -> None:
    passwords = {"sapphire-agent": USER_PASSWORDS["redis_agent_password"],
                 "sapphire-replica": USER_PASSWORDS["redis_replication_password"],
                 "sapphire-monitor": USER_PASSWORDS["redis_monitor_password"]}
    assert redis_permission_problems(converged.ports["redis-test-primary"], passwords, converged.ca_file) == []
    # The include file holds their passwords' SHA-256 only (the replication one also as masterauth: a replica needs it).
    auth = (converged.instance_dir("redis-test-primary") / "auth.conf").read_text()
    for name in ("redis_agent_password", "redis_monitor_password"):
        assert USER_PASSWORDS[name] not in auth, name
        assert hashlib.sha256(USER_PASSWORDS[name].encode()).hexdigest() in auth, name


def test_replica_is_linked_and_replicates(converged: Pair) -> None:
    replica = converged.client("redis-test-replica")
    info = replica.info("replication")
    assert info["role"] == "slave"
    assert info["master_link_status"] == "up"
    assert int(info["master_port"]) == converged.ports["redis-test-primary"]
    key, value = f"sapphire:test:{secrets.token_hex(4)}", secrets.token_hex(8)
    converged.client("redis-test-primary").set(key, value)
    deadline = time.monotonic() + 15
    while replica.get(key) != value and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replica.get(key) == value
    with pytest.raises(redis.exceptions.ReadOnlyError):
        replica.set(key, "written on the replica")


def test_second_run_changes_nothing_even_after_config_rewrite(converged: Pair) -> None:
    conf = converged.instance_dir("redis-test-primary") / "redis.conf"
    before = conf.read_bytes()
    # The rendered file is root-owned and read-only for redis: CONFIG REWRITE cannot make it drift.
    with pytest.raises(redis.exceptions.ResponseError):
        converged.client("redis-test-primary").config_rewrite()
    assert conf.read_bytes() == before
    result = converged.run(CONVERGE, converged.inventory)
    assert result.rc == 0, result.explain()
    assert result.changed == 0, f"second run changed: {result.changed_tasks()}"


def test_a_converged_instance_is_recognised_in_one_task_and_a_drifted_one_is_repaired(converged: Pair) -> None:
    detail = "redis : Render the Redis configuration"  # a task of the detailed converge
    result = converged.run(CONVERGE, converged.inventory)
    assert result.rc == 0 and result.changed == 0, result.explain()
    checked = result.task_results("redis : Recognise a host-mode instance its last converge left as it is")
    assert {host: item["converged"] for host, item in checked.items()} == dict.fromkeys(converged.ports, True)
    assert not result.task_results(detail), "the detailed converge ran on instances nothing touched"
    # A hand edit of the replica's configuration: that host alone converges again, and gets its file back.
    conf = converged.instance_dir("redis-test-replica") / "redis.conf"
    before = conf.read_bytes()
    conf.write_bytes(before + b"maxmemory 1mb\n")
    result = converged.run(CONVERGE, converged.inventory)
    assert result.rc == 0, result.explain()
    checked = result.task_results("redis : Recognise a host-mode instance its last converge left as it is")
    assert checked["redis-test-replica"]["reasons"] == [f"path {conf} changed"]
    assert conf.read_bytes() == before
    assert set(result.task_results(detail)) == {"redis-test-replica"}
    assert converged.client("redis-test-replica").info("replication")["master_link_status"] == "up"
    # The full check on request (as -e gives it, a string), changing nothing.
    result = converged.run(CONVERGE, converged.inventory, extra_vars={"deploy_full_check": "true"})
    assert result.rc == 0 and result.changed == 0, result.explain()
    assert set(result.task_results(detail)) == set(converged.ports)


def test_check_diff_is_quiet_and_never_prints_the_password(converged: Pair) -> None:
    result = converged.run(CONVERGE, converged.inventory, check=True, diff=True, verbosity=3, json_output=False)
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert converged.password not in output
    assert converged.password.split()[-1] not in output  # the random part alone
    for name, value in USER_PASSWORDS.items():
        assert value.split("-", 1)[1] not in output, name
    for host in converged.ports:
        assert any(line.startswith(host) and "changed=0" in line and "failed=0" in line
                   for line in output.splitlines()), f"{host} not unchanged in check mode"


# --- bad input: rejected before anything is written ---------------------------------------------


@pytest.fixture()
def lone(playbook_runner: Callable[..., Any]) -> Iterator[tuple[Path, Path, Callable[..., Any]]]:
    """A one-host inventory under its own traversable directory."""
    root = Path(tempfile.mkdtemp(prefix="sapphire-redis-bad-"))
    root.chmod(0o711)
    try:
        yield root, root / "local", playbook_runner
    finally:
        stop_instance(root / "local" / "redis" / "redis-bad")
        shutil.rmtree(root, ignore_errors=True)


def bad_run(lone: tuple[Path, Path, Callable[..., Any]], port: int, **extra: Any) -> Any:
    root, local_dir, run = lone
    inventory = write_inventory(root / "hosts.yml", local_dir, "bad-input-Secret-1",
                                {"redis-bad": {"redis_port": port, "redis_replication_role": "primary"}})
    return run(CONVERGE, inventory, extra_vars=extra or None)


def test_port_taken_by_another_process_is_rejected(lone: tuple[Path, Path, Callable[..., Any]]) -> None:
    local_dir = lone[1]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = bad_run(lone, port)
    assert result.rc != 0
    message = " ".join(result.failure_messages())
    assert "redis_port" in message and str(port) in message, message
    assert not (local_dir / "redis").exists(), "files were written before the port check"


def test_data_dir_of_another_instance_is_rejected_and_kept(lone: tuple[Path, Path, Callable[..., Any]]) -> None:
    local_dir = lone[1]
    data = local_dir / "redis" / "redis-bad" / "data"
    data.mkdir(parents=True)
    (data / ".sapphire-redis-instance").write_text("instance: redis-elsewhere\n")
    (data / "dump.rdb").write_bytes(b"REDIS0011 precious data")
    before = tree_digest(local_dir)
    result = bad_run(lone, free_port(set()))
    assert result.rc != 0
    message = " ".join(result.failure_messages())
    assert "redis-elsewhere" in message and "redis_instance_dir" in message, message
    assert tree_digest(local_dir) == before


def test_unmarked_data_dir_is_rejected(lone: tuple[Path, Path, Callable[..., Any]]) -> None:
    local_dir = lone[1]
    data = local_dir / "redis" / "redis-bad" / "data"
    data.mkdir(parents=True)
    (data / "appendonly.aof").write_text("*1\r\n$4\r\nPING\r\n")
    before = tree_digest(local_dir)
    result = bad_run(lone, free_port(set()))
    assert result.rc != 0
    assert "redis_adopt_data_dir" in " ".join(result.failure_messages())
    assert tree_digest(local_dir) == before


def test_empty_vault_password_is_rejected(lone: tuple[Path, Path, Callable[..., Any]]) -> None:
    local_dir = lone[1]
    result = bad_run(lone, free_port(set()), redis_password="")
    assert result.rc != 0
    message = " ".join(result.failure_messages())
    assert "vault_redis_password" in message and "sapphire_vault_file" in message, message
    assert not local_dir.exists()


def test_unsupported_distribution_is_rejected(lone: tuple[Path, Path, Callable[..., Any]]) -> None:
    local_dir = lone[1]
    # Pretend only the RedHat family were supported, so this Debian host is "unsupported".
    result = bad_run(lone, free_port(set()), __redis_supported_os_families=["RedHat"])
    assert result.rc != 0
    message = " ".join(result.failure_messages())
    assert "not supported" in message and "Debian" in message, message
    assert not local_dir.exists()


def test_unreachable_instance_dir_is_rejected(tmp_path: Path, playbook_runner: Callable[..., Any]) -> None:
    # pytest's tmp_path is under /tmp/pytest-of-root (0700): user redis cannot enter it.
    inventory = write_inventory(tmp_path / "hosts.yml", tmp_path / "local", "bad-input-Secret-1",
                                {"redis-bad": {"redis_port": free_port(set()), "redis_replication_role": "primary"}})
    result = playbook_runner(CONVERGE, inventory)
    assert result.rc != 0
    assert "cannot enter" in " ".join(result.failure_messages())
    assert not (tmp_path / "local").exists()
