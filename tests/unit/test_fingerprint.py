"""The converged-host fingerprint: library/sapphire_fingerprint.py observes files, server processes and packages on the
host and compares them with what the last converge recorded; filter_plugins/fingerprint.py digests the inputs and the
toolkit's code on the controller. The roles skipping their detailed converge with it:
tests/integration/test_redis_host.py (drift repaired, a converged host recognised, deploy_full_check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import load_module

fingerprint = load_module("sapphire_fingerprint")
filters = load_module("fingerprint", "filter_plugins")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_file_is_observed_by_content_mode_and_owner(tmp_path: Path) -> None:
    conf = tmp_path / "redis.conf"
    conf.write_text("port 6379\n")
    conf.chmod(0o640)
    before = fingerprint.observe_path(str(conf))
    assert before.startswith("file 640 ")
    conf.chmod(0o644)
    assert fingerprint.observe_path(str(conf)) != before, "a mode change is drift"
    conf.chmod(0o640)
    assert fingerprint.observe_path(str(conf)) == before
    conf.write_text("port 6380\n")
    assert fingerprint.observe_path(str(conf)) != before, "a content change is drift"
    assert fingerprint.observe_path(str(tmp_path / "gone")) == "missing"
    assert fingerprint.observe_path(str(tmp_path)).startswith("dir ")


def test_a_large_file_is_observed_by_size_and_mtime_without_reading_it(tmp_path: Path) -> None:
    """The control plane binaries (hundreds of MB) are observed without hashing them on every run."""
    binary = tmp_path / "kube-apiserver"
    binary.write_bytes(b"v1.31.0")
    binary.chmod(0o755)
    before = fingerprint.observe_path(str(binary), hashed=False)
    assert before.startswith("file 755 ") and " 7 bytes modified " in before
    assert fingerprint.observe_path(str(binary), hashed=False) == before
    binary.write_bytes(b"v1.32.0")
    os.utime(binary, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert fingerprint.observe_path(str(binary), hashed=False) != before, "a replaced binary is drift"
    binary.unlink()
    observed = fingerprint.observe([], [], [], large_files=[str(binary)])
    assert observed == {f"path {binary}": "missing"}, "a deleted binary is drift"


def test_a_restarted_or_dead_server_is_not_the_one_recorded(tmp_path: Path) -> None:
    pidfile = tmp_path / "server.pid"
    assert fingerprint.observe_process(str(pidfile)) == "no pid file"
    first = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{first.pid}\n")
        running = fingerprint.observe_process(str(pidfile))
        assert running.startswith(f"pid {first.pid} started ") and running.endswith("sleep 60")
        assert fingerprint.observe_process(str(pidfile)) == running, "the same process reads the same"
    finally:
        first.kill()
        first.wait()
    assert fingerprint.observe_process(str(pidfile)) == f"pid {first.pid} not running"
    second = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{second.pid}\n")
        assert fingerprint.observe_process(str(pidfile)) != running
    finally:
        second.kill()
        second.wait()


def test_package_versions_come_from_dpkgs_status_file(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Package: redis-server\nStatus: install ok installed\nVersion: 5:7.0.15-1\n\n"
                      "Package: redis-tools\nStatus: deinstall ok config-files\nVersion: 5:7.0.15-1\n\n"
                      "Package: other\nStatus: install ok installed\nVersion: 1\n")
    assert fingerprint.installed_versions(["redis-server", "redis-tools", "absent"], str(status)) == {
        "redis-server": "5:7.0.15-1", "redis-tools": "not installed", "absent": "not installed"}


def test_differences_name_what_changed_and_nothing_when_converged() -> None:
    observed = {"path /a": "file 640 0:0 x", "process /p": "pid 1 started 5 redis-server"}
    recorded = {"inputs": "d1", "observed": dict(observed)}
    assert fingerprint.differences(recorded, "d1", observed) == []
    assert fingerprint.differences(None, "d1", observed) == [
        "no fingerprint recorded (first converge, or the last one did not finish)"]
    assert fingerprint.differences(recorded, "d2", observed) == [
        "the inputs changed (variables, platform state or the toolkit's code)"]
    changed = {**observed, "process /p": "pid 9 started 7 redis-server", "path /b": "missing"}
    assert fingerprint.differences(recorded, "d1", changed) == ["path /b is new or gone", "process /p changed"]


def test_the_inputs_digest_follows_the_inputs_and_the_code(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "redis"
    (role / "tasks").mkdir(parents=True)
    (role / "tasks" / "main.yml").write_text("---\n")
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "mod.py").write_text("x = 1\n")
    inputs = {"variables": {"redis_port": 6379, "redis_password": "secret"}}
    digest = filters.fingerprint_inputs(inputs, str(role))
    assert "secret" not in digest and len(digest) == 64
    reordered = {"variables": {"redis_password": "secret", "redis_port": 6379}}
    assert filters.fingerprint_inputs(reordered, str(role)) == digest
    assert filters.fingerprint_inputs({"variables": {"redis_port": 6380, "redis_password": "secret"}}, str(role)) \
        != digest
    (tmp_path / "library" / "mod.py").write_text("x = 2\n")
    assert filters.fingerprint_inputs(inputs, str(role)) != digest, "new toolkit code converges again"
    (tmp_path / "library" / "mod.py").write_text("x = 1\n")
    (role / "__pycache__").mkdir()
    (role / "__pycache__" / "main.cpython-311.pyc").write_bytes(os.urandom(8))
    assert filters.fingerprint_inputs(inputs, str(role)) == digest, "compiled files are not code changes"
    (role / "README.md").write_text("# a role's documentation\n")
    assert filters.fingerprint_inputs(inputs, str(role)) == digest, "documentation is not a code change"


def test_recording_then_checking_through_the_module(tmp_path: Path) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("a\n")
    path = tmp_path / ".sapphire-converged.json"

    def run(**args: object) -> dict:
        params = {"path": str(path), "inputs_digest": "d1", "paths": [str(conf)], **args}
        process = subprocess.run([sys.executable, str(REPO_ROOT / "library" / "sapphire_fingerprint.py")],
                                 input=json.dumps({"ANSIBLE_MODULE_ARGS": params}), capture_output=True, text=True,
                                 check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return json.loads(process.stdout)

    assert run()["converged"] is False
    recorded = run(record=True)
    assert recorded["changed"] is True and oct(path.stat().st_mode & 0o777) == "0o600"
    assert run(record=True)["changed"] is False, "the same state records nothing new"
    assert run() == {"changed": False, "converged": True, "reasons": [], "invocation": run()["invocation"]}
    assert run(force=True)["reasons"] == ["the full check was asked for (deploy_full_check)"]
    time.sleep(0.01)
    conf.write_text("b\n")
    assert run()["reasons"] == [f"path {conf} changed"]
    assert run(_ansible_check_mode=True, record=True)["changed"] is True
    assert run()["converged"] is False, "check mode recorded nothing"


def test_a_certificate_due_for_renewal_makes_the_host_not_converged(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(name: str, days: int) -> Path:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
        path = tmp_path / f"{name}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    fresh, ending = certificate("fresh", 300), certificate("ending", 10)
    path = tmp_path / ".sapphire-converged.json"

    def run(**args: object) -> dict:
        params = {"path": str(path), "inputs_digest": "d1", **args}
        process = subprocess.run([sys.executable, str(REPO_ROOT / "library" / "sapphire_fingerprint.py")],
                                 input=json.dumps({"ANSIBLE_MODULE_ARGS": params}), capture_output=True, text=True,
                                 check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return json.loads(process.stdout)

    run(record=True)
    assert run(certificates=[str(fresh)])["converged"] is True
    assert run(certificates=[str(fresh), str(ending)])["reasons"] == [
        f"certificate {ending} ends within 30 days (due for renewal)"]
    assert run(certificates=[str(ending)], certificate_renew_days=7)["converged"] is True
    missing = run(certificates=[str(tmp_path / "none.crt")])
    assert missing["converged"] is False and "cannot be read" in missing["reasons"][0]
