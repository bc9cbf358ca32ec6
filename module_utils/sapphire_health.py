# -*- coding: utf-8 -*-
# Copyright: sapphire-ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The result shape every sapphire_*_info health module returns, and its check helpers.

A module builds the skeleton first (`new_result()`), appends checks made with `ok()`,
`warn()`, `fail()` or `skipped()`, and hands the result to `finish()`, which derives
`healthy` (no check failed) and `problems` (one actionable sentence per failing or
warning check). Keeping this in one place is what makes the report of validate.yml
uniform across Redis, PostgreSQL, Prometheus and Kubernetes.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from typing import Any

STATUSES = ("ok", "warn", "fail", "skipped")
SEVERITY = {"ok": 0, "skipped": 0, "warn": 1, "fail": 2}


def new_result(target: str = "") -> dict[str, Any]:
    """The documented keys, present even when the target cannot be reached."""
    return {"changed": False, "healthy": False, "target": target, "checks": [], "problems": []}


def check(name: str, status: str, msg: str, observed: Any = None, threshold: Any = None) -> dict[str, Any]:
    if status not in STATUSES:
        raise ValueError(f"check status must be one of {STATUSES}, got {status!r}")
    return {"name": name, "status": status, "observed": observed, "threshold": threshold, "msg": msg}


def ok(name: str, msg: str, observed: Any = None, threshold: Any = None) -> dict[str, Any]:
    return check(name, "ok", msg, observed, threshold)


def warn(name: str, msg: str, observed: Any = None, threshold: Any = None) -> dict[str, Any]:
    return check(name, "warn", msg, observed, threshold)


def fail(name: str, msg: str, observed: Any = None, threshold: Any = None) -> dict[str, Any]:
    return check(name, "fail", msg, observed, threshold)


def skipped(name: str, msg: str, observed: Any = None, threshold: Any = None) -> dict[str, Any]:
    return check(name, "skipped", msg, observed, threshold)


def by_level(name: str, value: float, warn_at: float | None, fail_at: float | None, msg: str,
             observed: Any = None, unit: str = "") -> dict[str, Any]:
    """ok/warn/fail for a value compared with two ascending thresholds (`>=` breaches)."""
    shown = value if observed is None else observed
    if fail_at is not None and value >= fail_at:
        return fail(name, f"{msg} ({value:g}{unit} >= {fail_at:g}{unit})", shown, fail_at)
    if warn_at is not None and value >= warn_at:
        return warn(name, f"{msg} ({value:g}{unit} >= {warn_at:g}{unit})", shown, warn_at)
    return ok(name, f"{msg} ({value:g}{unit})", shown, fail_at if fail_at is not None else warn_at)


def worst(checks: list[dict[str, Any]]) -> str:
    """The most severe status among checks (ok when there are none)."""
    status = "ok"
    for item in checks:
        if SEVERITY[item["status"]] > SEVERITY[status]:
            status = item["status"]
    return status


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """Fill `healthy` and `problems` from the checks; `changed` stays false."""
    result["changed"] = False
    result["healthy"] = not any(item["status"] == "fail" for item in result["checks"])
    prefix = f"{result['target']}: " if result.get("target") else ""
    result["problems"] = [f"{prefix}{item['msg']}" for item in result["checks"] if item["status"] in ("fail", "warn")]
    return result


def skip_all(names: list[str], reason: str) -> list[dict[str, Any]]:
    """Checks that could not run, e.g. because the server is unreachable."""
    return [skipped(name, f"not checked: {reason}") for name in names]


def fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}B"


def certificate_end(raw: socket.socket, host: str) -> datetime.datetime | None:
    """When the certificate a server presents on `raw` ends: a TLS handshake that only reads it (trust is the client
    library's, which verifies chain and name); None when it presents none."""
    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading the end date only
    with context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    certificate = x509.load_der_x509_certificate(der)
    end = getattr(certificate, "not_valid_after_utc", None)  # cryptography 42+; older ones give a naive UTC time
    return end or certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017


def check_served_certificate(name: str, end: datetime.datetime | None, warn_days: int,
                             now: datetime.datetime | None = None) -> dict[str, Any]:
    """A certificate check (e.g. postgres_certificate) from the end of the served certificate: fail once ended, warn
    within warn_days (the window in which deploy signs a host-mode certificate again)."""
    if end is None:
        return fail(name, "the server does not speak TLS", None, "TLS")
    now = now or datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - a module runs on older Pythons too
    days = (end - now).total_seconds() / 86400
    stamp = end.strftime("%Y-%m-%d %H:%M UTC")
    if days <= 0:
        return fail(name, f"the server certificate expired on {stamp}", round(days, 1), 0)
    if days < warn_days:
        return warn(name, f"the server certificate ends on {stamp}, in {days:.0f} days: no deploy renewed it (a "
                    "host-mode server's is signed again by deploy within pki_cert_renew_days of its end; a managed "
                    "endpoint's by its provider)", round(days, 1), warn_days)
    return ok(name, f"the server certificate ends on {stamp} ({days:.0f} days)", round(days, 1), warn_days)
