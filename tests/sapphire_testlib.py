"""Test helpers shared by every test directory: running playbooks, reaching the local clusters.

Import from here (`from sapphire_testlib import run_playbook`); conftest.py only holds fixtures.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOCAL_INVENTORY = REPO_ROOT / "inventories" / "local"


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition", interval: float = 0.1) -> None:
    """Poll predicate until it is true; exceptions count as not yet (a server still starting or
    promoting). Fails the test with the last error after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # the server is still starting
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def yaml_strings(data: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every string of loaded YAML with the key it stands under (list items under their list's key)."""
    if isinstance(data, dict):
        for sub_key, value in data.items():
            yield from yaml_strings(value, str(sub_key))
    elif isinstance(data, list):
        for value in data:
            yield from yaml_strings(value, key)
    elif isinstance(data, str):
        yield key, data


def postgres_admin(instance_dir: Path, port: int, dbname: str = "sapphire") -> Any:
    """Superuser of a host-mode PostgreSQL instance over its socket (<instance_dir>/run; root maps to postgres)."""
    import psycopg

    return psycopg.connect(host=str(instance_dir / "run"), port=port, user="postgres", dbname=dbname,
                           autocommit=True, connect_timeout=10)


def postgres_app(port: int, password: str) -> Any:
    """The platform's user over TCP with its password, as the coordinator connects."""
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=port, user="sapphire", dbname="sapphire", password=password,
                           autocommit=True, connect_timeout=10)


# The logins per purpose of the postgres role (roles/postgres/vars/main.yml) with their default names.
POSTGRES_LOGIN_NAMES = {"postgres_user": "sapphire", "postgres_agent_user": "sapphire_agent",
                        "postgres_coordinator_user": "sapphire_coordinator",
                        "postgres_monitor_user": "sapphire_monitor"}


def postgres_role_logins() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The postgres role's __postgres_logins and __postgres_grants, rendered with the default login names."""
    from jinja2.nativetypes import NativeEnvironment

    data = yaml.safe_load((REPO_ROOT / "roles" / "postgres" / "vars" / "main.yml").read_text())
    env = NativeEnvironment()
    context = {**POSTGRES_LOGIN_NAMES, "__postgres_tables": data["__postgres_tables"]}

    def render(value: Any) -> Any:
        if isinstance(value, str) and "{{" in value:
            return env.from_string(value).render(**context)
        if isinstance(value, list):
            return [render(item) for item in value]
        if isinstance(value, dict):
            return {key: render(item) for key, item in value.items()}
        return value

    return render(data["__postgres_logins"]), render(data["__postgres_grants"])


def postgres_identities_sql(database: str = "sapphire") -> str:
    """The SQL the cluster's init Job runs to converge the logins (filter sapphire_postgres_grants_sql)."""
    sys.path.insert(0, str(REPO_ROOT / "filter_plugins"))
    try:
        import postgres_grants
    finally:
        sys.path.pop(0)
    logins, grants = postgres_role_logins()
    return postgres_grants.grants_sql(logins, grants, database)


# The ACL users per purpose of the redis role (roles/redis/defaults and vars/main.yml) with their default names.
def redis_role_acl_users() -> list[dict[str, Any]]:
    """The redis role's __redis_acl_users, rendered with the role's defaults."""
    from jinja2.nativetypes import NativeEnvironment

    defaults = yaml.safe_load((REPO_ROOT / "roles" / "redis" / "defaults" / "main.yml").read_text())
    data = yaml.safe_load((REPO_ROOT / "roles" / "redis" / "vars" / "main.yml").read_text())
    env = NativeEnvironment()
    users = []
    for entry in data["__redis_acl_users"]:
        users.append({key: env.from_string(value).render(**defaults) if isinstance(value, str) and "{{" in value
                      else value for key, value in entry.items()})
    return users


def redis_acl_args(passwords: dict[str, str]) -> list[str]:
    """redis-server arguments that create the role's ACL users; passwords: {password variable: value}."""
    args: list[str] = []
    for user in redis_role_acl_users():
        args += ["--user", user["user"], "reset", "on", ">" + passwords[user["password"]], *str(user["rules"]).split()]
    return args


# What each Redis ACL user may and may not do: (user, command, allowed).
REDIS_PERMISSIONS = [
    ("sapphire-agent", ("HSET", "sapphire:agent:probe:heartbeat", "ts", "1"), True),
    ("sapphire-agent", ("HINCRBYFLOAT", "sapphire:portfolio", "value", "0"), True),
    ("sapphire-agent", ("HSETNX", "sapphire:circuit:probe", "state", "closed"), True),
    ("sapphire-agent", ("GET", "sapphire:halt"), True),
    ("sapphire-agent", ("GET", "sapphire:epoch"), True),
    ("sapphire-agent", ("PING",), True),
    ("sapphire-agent", ("SET", "sapphire:halt", "cleared-by-an-agent"), False),
    ("sapphire-agent", ("DEL", "sapphire:halt"), False),
    ("sapphire-agent", ("SET", "sapphire:epoch", "0"), False),
    ("sapphire-agent", ("FLUSHALL",), False),
    ("sapphire-agent", ("CONFIG", "SET", "maxmemory-policy", "noeviction"), False),
    ("sapphire-agent", ("REPLICAOF", "NO", "ONE"), False),
    ("sapphire-agent", ("KEYS", "*"), False),
    ("sapphire-monitor", ("INFO", "replication"), True),
    ("sapphire-monitor", ("ROLE",), True),
    ("sapphire-monitor", ("CONFIG", "GET", "maxmemory-policy"), True),
    ("sapphire-monitor", ("HGETALL", "sapphire:agent:probe:heartbeat"), True),
    ("sapphire-monitor", ("HSET", "sapphire:agent:probe:heartbeat", "ts", "2"), False),
    ("sapphire-monitor", ("DEL", "sapphire:halt"), False),
    ("sapphire-monitor", ("CONFIG", "SET", "maxmemory-policy", "noeviction"), False),
    ("sapphire-replica", ("PING",), True),
    ("sapphire-replica", ("GET", "sapphire:halt"), False),
    ("sapphire-replica", ("INFO",), False),
]


def redis_permission_problems(port: int, passwords: dict[str, str], ca_file: str = "") -> list[str]:
    """Each command of REDIS_PERMISSIONS run as its user; what went otherwise than intended. passwords: {user: pw};
    ca_file: the platform CA of a server that speaks TLS (empty: plain TCP)."""
    import redis

    tls = {"ssl": True, "ssl_ca_certs": ca_file} if ca_file else {}
    problems = []
    for user, command, allowed in REDIS_PERMISSIONS:
        client = redis.Redis(host="127.0.0.1", port=port, username=user, password=passwords[user],
                             socket_timeout=10, **tls)
        try:
            client.execute_command(*command)
            outcome = "allowed"
        except redis.exceptions.NoPermissionError:
            outcome = "denied"
        except redis.RedisError as exc:
            outcome = f"failed ({type(exc).__name__}: {exc})"
        finally:
            client.close()
        if outcome != ("allowed" if allowed else "denied"):
            problems.append(f"{user}: {' '.join(command)} {outcome}, intended {'allowed' if allowed else 'denied'}")
    return problems


_TRADE = ("INSERT INTO trades (timestamp, symbol, agent_id, side, quantity, price, order_id) "
          "VALUES (now(), 'BTCUSDT', 'momentum', 'buy', 1, 50000, 'privilege-probe')")
_DECISION = "INSERT INTO agent_decisions (timestamp, agent_id, symbol, decision) VALUES (now(), 'm', 'BTCUSDT', 'hold')"
# What each login per purpose may and may not do: (login, statement, allowed). The epoch statements need the fence
# table.
POSTGRES_PRIVILEGES = [
    ("sapphire_agent", _TRADE, True),
    ("sapphire_agent", _DECISION, True),
    ("sapphire_agent", "SELECT count(*) FROM trades", True),
    ("sapphire_agent", "DELETE FROM trades", False),
    ("sapphire_agent", "UPDATE trades SET price = 0", False),
    ("sapphire_agent", "TRUNCATE trades", False),
    ("sapphire_agent", "CREATE TABLE privilege_probe (x int)", False),
    ("sapphire_agent", "DROP TABLE signals", False),
    ("sapphire_agent", "SELECT epoch FROM sapphire_epoch FOR SHARE", True),
    ("sapphire_agent", "UPDATE sapphire_epoch SET epoch = epoch + 1", False),
    ("sapphire_coordinator", "SELECT count(*) FROM trades", True),
    ("sapphire_coordinator", _DECISION, True),
    ("sapphire_coordinator", _TRADE, False),
    ("sapphire_coordinator", "DELETE FROM agent_decisions", False),
    ("sapphire_coordinator", "SELECT epoch FROM sapphire_epoch FOR SHARE", True),
    ("sapphire_monitor", "SELECT count(*) FROM trades", True),
    ("sapphire_monitor", "SELECT epoch FROM sapphire_epoch", True),
    ("sapphire_monitor", "SELECT count(*) FROM pg_ls_waldir()", True),  # pg_monitor's
    ("sapphire_agent", "SELECT count(*) FROM pg_ls_waldir()", False),
    ("sapphire_monitor", _TRADE, False),
    ("sapphire_monitor", "UPDATE sapphire_epoch SET epoch = epoch", False),
]


def postgres_privilege_problems(port: int, passwords: dict[str, str], database: str = "sapphire") -> list[str]:
    """Each statement of POSTGRES_PRIVILEGES run (and rolled back) as its login over TCP; what went otherwise than
    intended. passwords: {login: password}."""
    import psycopg

    problems = []
    for login, statement, allowed in POSTGRES_PRIVILEGES:
        with psycopg.connect(host="127.0.0.1", port=port, user=login, password=passwords[login], dbname=database,
                             connect_timeout=10) as conn:
            try:
                conn.execute(statement)
                outcome = "allowed"
            except psycopg.errors.InsufficientPrivilege:
                outcome = "denied"
            except psycopg.Error as exc:
                outcome = f"failed ({type(exc).__name__}: {' '.join(str(exc).split())})"
            conn.rollback()
        if outcome != ("allowed" if allowed else "denied"):
            problems.append(f"{login}: {statement!r} {outcome}, intended {'allowed' if allowed else 'denied'}")
    return problems


@dataclass
class PlaybookResult:
    """What one ansible-playbook run did, parsed from the json callback."""

    rc: int
    stdout: str
    stderr: str
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    plays: list[dict[str, Any]] = field(default_factory=list)
    job: Any = None  # the AwxJob (tests/awx_job.py) when run as an AWX job: its stored events, stats and leak scan

    @property
    def changed(self) -> int:
        return sum(host.get("changed", 0) for host in self.stats.values())

    @property
    def failed(self) -> int:
        return sum(host.get("failures", 0) + host.get("unreachable", 0) for host in self.stats.values())

    def task_results(self, name: str) -> dict[str, dict[str, Any]]:
        """Results per host of the last task called `name` (exact task name)."""
        found: dict[str, dict[str, Any]] = {}
        for play in self.plays:
            for task in play.get("tasks", []):
                if task["task"]["name"] == name:
                    found = task["hosts"]
        return found

    def changed_tasks(self) -> list[str]:
        names = []
        for play in self.plays:
            for task in play.get("tasks", []):
                if any(result.get("changed") for result in task["hosts"].values()):
                    names.append(task["task"]["name"])
        return names

    def failure_messages(self) -> list[str]:
        messages = []
        for play in self.plays:
            for task in play.get("tasks", []):
                for host, result in task["hosts"].items():
                    if result.get("failed") or result.get("unreachable"):
                        messages.append(f"{host}: {task['task']['name']}: {result.get('msg', '')}")
        return messages

    def explain(self) -> str:
        """A short text for assertion messages."""
        tail = self.stderr[-3000:]
        return "\n".join(self.failure_messages()) + f"\n--- stderr tail ---\n{tail}"


def sign_again(local_dir: Path, certificate_path: Path, days: float) -> None:
    """Replace a server certificate by one the platform CA signs for the same key and names, ending in `days`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_key = serialization.load_pem_private_key((local_dir / "pki" / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((local_dir / "pki" / "ca.crt").read_bytes())
    current = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    builder = (x509.CertificateBuilder().subject_name(current.subject).issuer_name(ca_cert.subject)
               .public_key(current.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=days)))
    for extension in current.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    certificate_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def secret_forms(value: str) -> set[str]:
    """A secret as an output may carry it: as is, base64, URL-encoded and JSON-escaped."""
    return {value, base64.b64encode(value.encode()).decode(), urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value), json.dumps(value)[1:-1]}


def leaked_secrets(text: str, secrets: dict[str, str]) -> list[str]:
    """The names (never the values) of the secrets of 8 characters or more found in text, in any of their forms."""
    return sorted(name for name, value in secrets.items()
                  if len(value) >= 8 and any(form in text for form in secret_forms(value)))


def _local_vault_lib() -> Any:
    from ansible.parsing.vault import VaultLib, VaultSecret

    password = (REPO_ROOT / ".local" / "vault-pass").read_text().strip().encode()
    return VaultLib([("local", VaultSecret(password))])


def local_vault() -> dict[str, str]:
    """The local default's vault values (.local/vault.yml, made by `make setup`), for the secret scans and for the
    vault files of the tests' inventories."""
    plain = _local_vault_lib().decrypt((REPO_ROOT / ".local" / "vault.yml").read_bytes())
    return {name: str(value) for name, value in yaml.safe_load(plain).items()}


def write_vault(path: Path, values: dict[str, Any]) -> Path:
    """A vault file of a test's inventory (what sapphire_vault_file names), encrypted like the local default's
    (vault id local, its password), so the playbooks load it as they load an environment's vault."""
    path.write_bytes(_local_vault_lib().encrypt(yaml.safe_dump(values), vault_id="local"))
    path.chmod(0o600)
    return path


def run_as_awx_job(playbook: str, inventory: str | Path, *, job_id: int, extra_vars: dict[str, Any] | None,
                   options: list[str], env: dict[str, str] | None, timeout: int) -> PlaybookResult:
    """run_playbook through tests/awx_job.py: the inventory synced as AWX syncs it (no vault password), the local
    vault's password answered at the prompt as the job template's Vault credential answers it."""
    from awx_job import run_job, sync_inventory

    password = (REPO_ROOT / ".local" / "vault-pass").read_text().strip()
    job_env = {"SAPPHIRE_LOCAL_DIR": str(REPO_ROOT / ".local"), **(env or {})}
    job = run_job(playbook, sync_inventory(Path(inventory)), job_id=job_id, extra_vars=extra_vars,
                  vault_password=password, env=job_env, options=options, timeout=timeout)
    result = job.playbook_result()
    result.job = job
    return result


def run_playbook(playbook: str, inventory: str | Path = LOCAL_INVENTORY, *, extra_vars: dict[str, Any] | None = None,
                 check: bool = False, diff: bool = False, limit: str | None = None, tags: str | None = None,
                 verbosity: int = 0, env: dict[str, str] | None = None, json_output: bool = True,
                 timeout: int = 1800, awx_job_id: int | None = None) -> PlaybookResult:
    """Run a playbook from the repository root the way an operator would, or (awx_job_id) as an AWX job runs it."""
    options = ["--check"] * check + ["--diff"] * diff + (["--limit", limit] if limit else []) \
        + (["--tags", tags] if tags else []) + (["-" + "v" * verbosity] if verbosity else [])
    if awx_job_id is not None:
        return run_as_awx_job(playbook, inventory, job_id=awx_job_id, extra_vars=extra_vars, options=options,
                              env=env, timeout=timeout)
    command = [str(VENV_BIN / "ansible-playbook"), playbook, "-i", str(inventory)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    command += options
    run_env = dict(os.environ)
    run_env["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")
    run_env["PATH"] = f"{VENV_BIN}{os.pathsep}{run_env.get('PATH', '')}"
    if json_output:
        run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    run_env.update(env or {})
    proc = subprocess.run(command, cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
    result = PlaybookResult(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    if json_output:
        start = proc.stdout.find("{")
        if start >= 0:
            try:
                data = json.loads(proc.stdout[start:])
            except json.JSONDecodeError:
                data = {}
            result.stats = data.get("stats", {})
            result.plays = data.get("plays", [])
    return result


@dataclass
class LocalClusters:
    kubeconfigs: dict[str, Path]

    def kubectl(self, cluster: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kubectl = kube_binary("kubectl")
        return subprocess.run([str(kubectl), "--kubeconfig", str(self.kubeconfigs[cluster]), *args],
                              capture_output=True, text=True, check=check, timeout=120)

    def drop_namespaces(self, *names: str) -> None:
        """Delete a test's throw-away namespaces in both clusters, without waiting (teardown)."""
        for cluster in self.kubeconfigs:
            for name in names:
                self.kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)

    def client(self, cluster: str):
        """A kubernetes ApiClient for one cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfigs[cluster]))


def kube_binary(name: str) -> Path:
    """A binary of the pinned Kubernetes release, from the cache tools/kube/build fills."""
    match = re.search(r"k8s\.io/kubernetes (v[0-9.]+)", (REPO_ROOT / "tools" / "kube" / "go.mod").read_text())
    version = match.group(1) if match else "unknown"
    cache = Path(os.environ.get("SAPPHIRE_CACHE", Path.home() / ".cache" / "sapphire-ops"))
    return cache / "kube" / version / name
