"""Real servers for the health-module and validate.yml tests.

Redis, PostgreSQL (primary + streaming standby made with pg_basebackup) and Prometheus from
the distribution packages, each on a free loopback port in a temporary directory, plus the
synthetic workload writing into them. Everything is stopped when the session (or the test,
for the throw-away ones) ends. PostgreSQL refuses root, so its commands run as `postgres`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sapphire_testlib import postgres_identities_sql, postgres_role_logins, redis_acl_args, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCHEMA = REPO_ROOT / "roles" / "postgres" / "files" / "schema.sql"
REDIS_PASSWORD = "redis-test-Secret-1"
# The passwords of the ACL users per purpose (roles/redis/vars/main.yml) every test Redis has.
REDIS_USER_PASSWORDS = {"redis_agent_password": "redis-agent-Secret-1",
                        "redis_replication_password": "redis-replication-Secret-1",
                        "redis_monitor_password": "redis-monitor-Secret-1"}
POSTGRES_PASSWORD = "pg-test-Secret-1"
# The passwords of the logins per purpose (roles/postgres/vars/main.yml) every test primary has.
POSTGRES_LOGIN_PASSWORDS = {"postgres_agent_password": "pg-agent-Secret-1",
                            "postgres_coordinator_password": "pg-coordinator-Secret-1",
                            "postgres_monitor_password": "pg-monitor-Secret-1"}
AGENTS = [
    {"name": "momentum", "strategy": "momentum", "tier": "standard", "replicas": 2},
    {"name": "sentiment", "strategy": "sentiment", "tier": "heavy", "replicas": 1},
    {"name": "pairs", "strategy": "pairs", "tier": "standard", "replicas": 1},
    {"name": "breakout", "strategy": "breakout", "tier": "lightweight", "replicas": 1},
    {"name": "scalping", "strategy": "scalping", "tier": "accelerated", "replicas": 1},
    {"name": "volatility", "strategy": "volatility", "tier": "standard", "replicas": 0},
]


LOCAL_DEFAULT_GROUP = "local-default"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook turns the xdist_group marks into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests for pytest-xdist's loadgroup (`make integration` runs two workers).

    Everything that touches the local default (its clusters, its inventory, its fixed ports) runs on
    one worker, one test at a time, as before. A module runs beside it only when it is marked
    `servers` and none of its tests asks for `local_clusters`: it starts its own servers on free
    ports in its own directory. Each such module stays whole on one worker (its module fixtures are
    made once). Anything not provably independent lands in the local-default group.
    """
    modules: dict[Any, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.module, []).append(item)
    for module, members in modules.items():
        independent = any(m.name == "servers" for m in members[0].iter_markers()) and not any(
            "local_clusters" in getattr(member, "fixturenames", ()) for member in members)
        group = module.__name__ if independent else LOCAL_DEFAULT_GROUP
        for member in members:
            member.add_marker(pytest.mark.xdist_group(group))


# Seconds spent per worker and per group (setup, call and teardown), summed on the controller: where the stage's time
# goes, printed after the run so that the CI log says which worker bounds it.
_SPENT: dict[tuple[str, str], float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    worker = getattr(getattr(report, "node", None), "gateway", None)
    key = (worker.id if worker else "main", report.nodeid.rpartition("@")[2] if "@" in report.nodeid else "-")
    _SPENT[key] = _SPENT.get(key, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SPENT:
        return
    terminalreporter.section("time per worker and group (setup + call + teardown)")
    for worker in sorted({w for w, _ in _SPENT}):
        groups = sorted(((s, g) for (w, g), s in _SPENT.items() if w == worker), reverse=True)
        terminalreporter.write_line(f"{worker}: {sum(s for s, _ in groups):.0f} s: "
                                    + ", ".join(f"{g} {s:.0f} s" for s, g in groups))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def require_binary(path: str | Path) -> None:
    if not shutil.which(str(path)) and not Path(path).exists():
        pytest.skip(f"{path} not installed (run tools/setup-packages)")


# ---------------------------------------------------------------- Redis
@dataclass
class RedisServer:
    port: int
    password: str
    directory: Path
    proc: subprocess.Popen[Any] | None = None
    extra: list[str] = field(default_factory=list)

    def start(self) -> RedisServer:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                   "--requirepass", self.password, "--masterauth", self.password, "--appendonly", "yes",
                   "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", "--save", "900 1 300 10 60 10000",
                   "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
                   *redis_acl_args(REDIS_USER_PASSWORDS), *self.extra]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client().ping(), 20, f"redis on {self.port}")
        return self

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
                           socket_connect_timeout=2)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)

    def params(self) -> dict[str, Any]:
        return {"redis_host": "127.0.0.1", "redis_port": self.port, "redis_password": self.password}


def start_redis(tmp: Path, extra: list[str] | None = None) -> RedisServer:
    require_binary("redis-server")
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=tmp))
    return RedisServer(port=free_port(), password=REDIS_PASSWORD, directory=directory, extra=extra or []).start()


def traversable_tmp() -> Path:
    """A temporary directory owned by the postgres user (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sapphire-it-"))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


@pytest.fixture(scope="session")
def servers_tmp() -> Iterator[Path]:
    path = traversable_tmp()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(servers_tmp: Path) -> Iterator[RedisServer]:
    server = start_redis(servers_tmp)
    yield server
    server.stop()


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of its own, for tests that break it."""
    server = start_redis(tmp_path)
    yield server
    server.stop()


# ---------------------------------------------------------------- PostgreSQL
def as_postgres(*command: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *command], check=check, capture_output=True, text=True, timeout=120, **kwargs)


@dataclass
class PostgresServer:
    port: int
    directory: Path
    password: str = POSTGRES_PASSWORD

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def start(self) -> PostgresServer:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "postgres.log"),
                    "-o", f"-p {self.port} -k {self.directory}", "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def psql(self, sql: str, database: str = "sapphire") -> str:
        result = as_postgres(str(PG_BIN / "psql"), "-h", str(self.directory), "-p", str(self.port), "-d", database,
                             "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql)
        return result.stdout.strip()

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="sapphire", password=self.password,
                               dbname="sapphire", autocommit=True)

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=sapphire user=sapphire password={self.password}"

    def params(self) -> dict[str, Any]:
        return {"postgres_host": "127.0.0.1", "postgres_port": self.port, "postgres_user": "sapphire",
                "postgres_password": self.password, "postgres_database": "sapphire", "postgres_sslmode": "disable"}


def make_postgres_dir(tmp: Path, name: str) -> Path:
    directory = tmp / name
    directory.mkdir()
    shutil.chown(directory, "postgres", "postgres")
    os.chmod(directory, 0o700)
    return directory


def start_postgres_primary(tmp: Path) -> PostgresServer:
    require_binary(PG_BIN / "initdb")
    server = PostgresServer(port=free_port(), directory=make_postgres_dir(tmp, f"pg-primary-{free_port()}"))
    as_postgres(str(PG_BIN / "initdb"), "-D", str(server.data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
    with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 5\n"
                   "max_connections = 50\nshared_buffers = 32MB\nfsync = off\nhot_standby = on\n"
                   "wal_receiver_status_interval = 1s\n")
    (server.data / "pg_hba.conf").write_text(
        "local all all trust\nhost replication postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n")
    server.start()
    server.psql(f"CREATE ROLE sapphire LOGIN PASSWORD '{server.password}' IN ROLE pg_monitor", "postgres")
    server.psql("CREATE DATABASE sapphire OWNER sapphire", "postgres")
    schema = as_postgres(str(PG_BIN / "psql"), "-h", str(server.directory), "-p", str(server.port), "-U", "sapphire",
                         "-d", "sapphire", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", input=SCHEMA.read_text(),
                         check=False)
    assert schema.returncode == 0, schema.stderr
    # The logins per purpose, converged by the SQL the cluster's init Job runs (passwords from the environment).
    logins, _ = postgres_role_logins()
    identities = as_postgres(str(PG_BIN / "psql"), "-h", str(server.directory), "-p", str(server.port),
                             "-U", "postgres", "-d", "sapphire", "-q", "-f", "-", input=postgres_identities_sql(),
                             check=False,
                             env={**os.environ, **{login["env"]: POSTGRES_LOGIN_PASSWORDS[login["password"]]
                                                   for login in logins}})
    assert identities.returncode == 0, identities.stderr
    return server


def start_postgres_standby(primary: PostgresServer, tmp: Path) -> PostgresServer:
    standby = PostgresServer(port=free_port(), directory=make_postgres_dir(tmp, f"pg-standby-{free_port()}"))
    as_postgres(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", str(standby.data), "-R", "-w", "-X", "stream", "-c", "fast", "-d",
                f"application_name=standby-{standby.port}")
    standby.start()
    wait_for(lambda: primary.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                                  "postgres") != "0", 30, "standby streaming")
    return standby


@pytest.fixture(scope="session")
def postgres_server(servers_tmp: Path) -> Iterator[PostgresServer]:
    server = start_postgres_primary(servers_tmp)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_standby(postgres_server: PostgresServer, servers_tmp: Path) -> Iterator[PostgresServer]:
    standby = start_postgres_standby(postgres_server, servers_tmp)
    yield standby
    standby.stop()


@pytest.fixture
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A primary of its own, for tests that damage the schema."""
    path = traversable_tmp()
    server = start_postgres_primary(path)
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- Prometheus
@dataclass
class PrometheusServer:
    port: int
    proc: subprocess.Popen[Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]


def start_prometheus(tmp: Path, rules: str, targets: tuple[str, ...] = ()) -> PrometheusServer:
    """A Prometheus evaluating `rules` every second and scraping `targets` (host:port) every second."""
    require_binary("prometheus")
    directory = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp))
    (directory / "rules.yml").write_text(rules)
    scrape = [{"job_name": "targets", "static_configs": [{"targets": list(targets)}]}] if targets else []
    (directory / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n"
        f"scrape_configs: {json.dumps(scrape)}\n")
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={directory / 'prometheus.yml'}",
                             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL,
                            stderr=open(directory / "prometheus.log", "w"))
    server = PrometheusServer(port=port, proc=proc)
    wait_for(lambda: server.alerts() is not None, 30, "prometheus ready")
    return server


QUIET_RULES = """groups:
  - name: sapphire-test
    rules:
      - alert: NeverFires
        expr: vector(0) > 1
        labels: {severity: critical}
"""
FIRING_RULES = """groups:
  - name: sapphire-test
    rules:
      - alert: SyntheticCritical
        expr: vector(1) > 0
        for: 0s
        labels: {severity: critical}
        annotations: {summary: "synthetic critical alert for the fault matrix"}
"""


@pytest.fixture(scope="session")
def prometheus_server(servers_tmp: Path) -> Iterator[PrometheusServer]:
    server = start_prometheus(servers_tmp, QUIET_RULES)
    yield server
    stop_process(server.proc)


@pytest.fixture
def firing_prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path, FIRING_RULES)
    wait_for(lambda: any(a["state"] == "firing" for a in server.alerts()), 30, "critical alert firing")
    yield server
    stop_process(server.proc)


# ---------------------------------------------------------------- synthetic workload
@dataclass
class WorkloadProcess:
    port: int
    proc: subprocess.Popen[Any]
    agents_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, fault: dict[str, Any]) -> None:
        response = requests.post(f"{self.url}/admin/fault", json=fault, timeout=5)
        assert response.status_code == 200, response.text


def start_workload(tmp: Path, redis_server: RedisServer, postgres: PostgresServer,
                   agents: list[dict[str, Any]], *extra: str) -> WorkloadProcess:
    agents_file = tmp / f"agents-{free_port()}.json"
    agents_file.write_text(json.dumps(agents))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "workload"), SAPPHIRE_REDIS_PASSWORD=redis_server.password,
               SAPPHIRE_POSTGRES_DSN=postgres.dsn())
    proc = subprocess.Popen([sys.executable, "-m", "sapphire_workload", "--redis-url",
                             f"redis://127.0.0.1:{redis_server.port}/0", "--agents", str(agents_file),
                             "--release", "2026.11.0", "--port", str(port), "--interval", "0.5", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"workload-{port}.log", "w"))
    workload = WorkloadProcess(port=port, proc=proc, agents_file=agents_file)

    def healthy() -> bool:
        return requests.get(f"{workload.url}/health", timeout=2).json()["status"] == "ok"

    wait_for(healthy, 30, "workload healthy")
    return workload


@pytest.fixture(scope="session")
def workload(servers_tmp: Path, redis_server: RedisServer,
             postgres_server: PostgresServer) -> Iterator[WorkloadProcess]:
    process = start_workload(servers_tmp, redis_server, postgres_server, AGENTS)
    yield process
    stop_process(process.proc)


@pytest.fixture(scope="session")
def platform(redis_server: RedisServer, postgres_server: PostgresServer, postgres_standby: PostgresServer,
             prometheus_server: PrometheusServer, workload: WorkloadProcess) -> dict[str, Any]:
    """The healthy platform: every server up, the workload writing."""
    return {"redis": redis_server, "postgres": postgres_server, "standby": postgres_standby,
            "prometheus": prometheus_server, "workload": workload, "agents": AGENTS}


# ---------------------------------------------------------------- the health modules, in process
def load_library_module(name: str) -> Any:
    """library/<name>.py with module_utils importable as ansible.module_utils.* (as Ansible ships them)."""
    import importlib.util

    import ansible.module_utils

    if str(REPO_ROOT / "module_utils") not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(str(REPO_ROOT / "module_utils"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "library" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
