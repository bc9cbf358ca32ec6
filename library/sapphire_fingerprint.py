#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sapphire_fingerprint
short_description: Recognise a host-mode server its last converge left as it is, in one task
description:
  - A host-mode role (Redis, PostgreSQL, monitoring, the backup store) converges a host with dozens of detailed
    checks. This module lets it skip them on a host nothing has touched since the last complete converge.
  - The fingerprint has two parts. The inputs digest (computed on the controller by the role host_fingerprint) covers
    the role's public variables, the values it derives from the inventory and the platform state, and the code of the
    toolkit. The observed state is read here, each named path (type, mode, owner, group and, for files, a SHA-256 of the
    content), each server process (the pid in its pid file, that process's start time and command line) and the
    installed version of each named package (from dpkg's status file).
  - With O(record=false) (check) the host is converged when a fingerprint file exists, O(force) is false, and both parts
    equal the recorded ones. The result names every difference (C(reasons)), so an operator sees why the detailed
    converge ran. Nothing is written.
  - With O(record=true) the fingerprint of the state just converged is written to O(path) (mode 0600, owner root),
    atomically; C(changed) only when its content changes. In check mode nothing is written.
  - Not covered is the state inside a server (PostgreSQL roles and schema, Redis runtime CONFIG SET); the detailed
    converge checks it when it runs, and validate checks the servers' health on every run. O(force) (the playbook
    variable deploy_full_check) runs the detailed converge.
version_added: "1.0.0"
author: sapphire-ops
options:
  path:
    description: The fingerprint file on the host.
    type: path
    required: true
  inputs_digest:
    description: SHA-256 of the role's inputs (never the inputs themselves; some are secrets).
    type: str
    required: true
  paths:
    description: Files and directories the converge leaves (a missing one is part of the fingerprint too).
    type: list
    elements: path
    default: []
  large_files:
    description:
      - Large files (binaries) observed by type, mode, owner, size and modification time instead of a SHA-256 of their
        content, which would cost seconds on every run.
    type: list
    elements: path
    default: []
  pidfiles:
    description: Pid files of the server processes the converge runs.
    type: list
    elements: path
    default: []
  packages:
    description: Debian packages the converge installs (their installed versions are observed).
    type: list
    elements: str
    default: []
  certificates:
    description:
      - Server certificates (PEM) the converge keeps signed. With O(record=false), one that ends within
        O(certificate_renew_days) (or cannot be read) makes the host not converged, so the converge signs it again.
    type: list
    elements: path
    default: []
  certificate_renew_days:
    description: Days before its end that a certificate is due for renewal (the pki role's C(pki_cert_renew_days)).
    type: int
    default: 30
  record:
    description: Write the fingerprint of the current state instead of comparing with it.
    type: bool
    default: false
  force:
    description: Report the host as not converged whatever the fingerprint says (the full check).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Recognise a converged instance
  sapphire_fingerprint:
    path: /srv/redis/primary/.sapphire-converged.json
    inputs_digest: "{{ inputs | to_json | hash('sha256') }}"
    paths: [/srv/redis/primary/redis.conf]
    pidfiles: [/srv/redis/primary/redis.pid]
    packages: [redis-server]
  register: fingerprint
"""

RETURN = r"""
converged:
  description: Whether the host is as the last converge left it (always false when recording).
  type: bool
  returned: always
reasons:
  description: What differs from the recorded fingerprint (empty when converged).
  type: list
  elements: str
  returned: always
"""

import hashlib
import json
import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DPKG_STATUS = "/var/lib/dpkg/status"


def observe_path(path: str, hashed: bool = True) -> str:
    """Type, mode, owner and content digest (else size and mtime) of one path ('missing' when absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    kind = "dir" if os.path.isdir(path) and not os.path.islink(path) else "link" if os.path.islink(path) else "file"
    described = f"{kind} {st.st_mode & 0o7777:o} {st.st_uid}:{st.st_gid}"
    if kind == "file" and not hashed:
        described += f" {st.st_size} bytes modified {st.st_mtime_ns}"
    elif kind == "file":
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        described += " " + digest.hexdigest()
    elif kind == "link":
        described += " -> " + os.readlink(path)
    return described


def observe_process(pidfile: str, proc: str = "/proc") -> str:
    """The process a pid file names: pid, start time (clock ticks since boot) and command line; else why not."""
    try:
        pid = int(open(pidfile, encoding="ascii").read().split()[0])
    except (OSError, ValueError, IndexError):
        return "no pid file"
    try:
        stat = open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace").read()
        cmdline = open(f"{proc}/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid} not running"
    # Field 22 (start time) counted after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields and fields[0] == "Z":
        return f"pid {pid} not running"
    return f"pid {pid} started {fields[19]} {cmdline}"


def installed_versions(packages: list[str], status_file: str = DPKG_STATUS) -> dict[str, str]:
    """Installed version of each package from dpkg's status file ('not installed' otherwise)."""
    versions = {name: "not installed" for name in packages}
    try:
        text = open(status_file, encoding="utf-8", errors="replace").read()
    except OSError:
        return versions
    wanted = set(packages)
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if name in wanted and fields.get("Status", "").endswith(" installed"):
            versions[name] = fields.get("Version", "")
    return versions


def observe(paths: list[str], pidfiles: list[str], packages: list[str],
            large_files: list[str] | None = None) -> dict[str, str]:
    observed = {f"path {path}": observe_path(path) for path in paths}
    observed.update({f"path {path}": observe_path(path, hashed=False) for path in large_files or []})
    observed.update({f"process {pidfile}": observe_process(pidfile) for pidfile in pidfiles})
    observed.update({f"package {name}": version for name, version in installed_versions(packages).items()})
    return observed


def certificates_due(module: AnsibleModule, paths: list[str], renew_days: int) -> list[str]:
    """The certificates that end within renew_days or cannot be read (openssl x509 -checkend), as reasons."""
    reasons = []
    for path in paths:
        rc, _, err = module.run_command(["openssl", "x509", "-noout", "-in", path, "-checkend",
                                         str(renew_days * 86400)])
        if rc == 1 and not err.strip():
            reasons.append(f"certificate {path} ends within {renew_days} days (due for renewal)")
        elif rc != 0:
            reasons.append(f"certificate {path} cannot be read: {' '.join(err.split()) or f'openssl exited {rc}'}")
    return reasons


def differences(recorded: dict[str, Any] | None, inputs_digest: str, observed: dict[str, str]) -> list[str]:
    """Why the host is not as the last converge left it; empty when it is."""
    if not recorded:
        return ["no fingerprint recorded (first converge, or the last one did not finish)"]
    reasons = []
    if recorded.get("inputs") != inputs_digest:
        reasons.append("the inputs changed (variables, platform state or the toolkit's code)")
    before = recorded.get("observed", {})
    for item in sorted(set(before) | set(observed)):
        if before.get(item) != observed.get(item):
            reasons.append(f"{item} changed" if item in before and item in observed else f"{item} is new or gone")
    return reasons


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "inputs_digest": {"type": "str", "required": True},
            "paths": {"type": "list", "elements": "path", "default": []},
            "large_files": {"type": "list", "elements": "path", "default": []},
            "pidfiles": {"type": "list", "elements": "path", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "certificates": {"type": "list", "elements": "path", "default": []},
            "certificate_renew_days": {"type": "int", "default": 30},
            "record": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    params = module.params
    observed = observe(params["paths"], params["pidfiles"], params["packages"], params["large_files"])
    try:
        recorded = json.loads(open(params["path"], encoding="utf-8").read())
    except (OSError, ValueError):
        recorded = None

    if not params["record"]:
        reasons = ["the full check was asked for (deploy_full_check)"] if params["force"] else []
        reasons += differences(recorded, params["inputs_digest"], observed)
        reasons += certificates_due(module, params["certificates"], params["certificate_renew_days"])
        module.exit_json(changed=False, converged=not reasons, reasons=reasons)

    fingerprint = {"inputs": params["inputs_digest"], "observed": observed}
    if recorded == fingerprint:
        module.exit_json(changed=False, converged=False, reasons=[])
    if not module.check_mode:
        directory = os.path.dirname(params["path"])
        fd, temporary = tempfile.mkstemp(prefix=".sapphire-fingerprint-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(fingerprint, handle, indent=1, sort_keys=True)
                handle.write("\n")
            os.chmod(temporary, 0o600)
            os.replace(temporary, params["path"])
        except OSError as error:
            if os.path.exists(temporary):
                os.unlink(temporary)
            module.fail_json(msg=f"cannot write the fingerprint {params['path']}: {error}")
    module.exit_json(changed=True, converged=False, reasons=[])


if __name__ == "__main__":
    main()
