"""Controller-side filters shared by the roles: labels, security contexts, quantities.

Kept here once so every role renders the same labels and the same restricted-profile
security settings, and so capacity arithmetic (preflight) is done in Python, not Jinja.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from ansible.errors import AnsibleFilterError

PART_OF = "sapphire"
MANAGED_BY = "sapphire-ops"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("100m", "1.5Gi", 2) as a Decimal of base units."""
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 384Mi, 1.5Gi)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise AnsibleFilterError(f"{value!r} is not a Kubernetes quantity") from exc
    return base * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def is_quantity(value: Any) -> bool:
    try:
        parse_quantity(value)
    except AnsibleFilterError:
        return False
    return True


def quantity(value: Any) -> float:
    """Filter: a quantity as a float of base units (cores, bytes)."""
    return float(parse_quantity(value))


def format_quantity(value: float, resource: str) -> str:
    """Filter: a number of base units as a readable quantity for the resource."""
    amount = Decimal(str(value))
    if resource.endswith("cpu"):
        millis = (amount * 1000).quantize(Decimal(1))
        return f"{millis / 1000}" if millis % 1000 == 0 else f"{millis}m"
    if "memory" in resource or "storage" in resource:
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if amount >= _BINARY[suffix]:
                scaled = amount / _BINARY[suffix]
                return f"{scaled.quantize(Decimal('0.01')).normalize():f}{suffix}"
        return f"{amount}"
    return f"{amount.normalize():f}"


def sapphire_labels(component: str, release: str, name: str | None = None,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """Filter: the labels every object of the platform carries (DESIGN.md)."""
    labels = {
        "app.kubernetes.io/name": name or component,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": str(release),
    }
    labels.update(extra or {})
    return labels


def sapphire_selector(component: str, name: str | None = None) -> dict[str, str]:
    """Filter: the stable subset of the labels used as a workload selector."""
    return {
        "app.kubernetes.io/name": name or component,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def pod_security_context(uid: int = 10001, gid: int | None = None) -> dict[str, Any]:
    """Filter: a pod securityContext admitted by Pod Security "restricted"."""
    group = uid if gid is None else gid
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": group, "fsGroup": group,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context(read_only_root: bool = True) -> dict[str, Any]:
    """Filter: a container securityContext admitted by Pod Security "restricted"."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": bool(read_only_root),
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


class FilterModule:
    """sapphire-ops filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "sapphire_quantity": quantity,
            "sapphire_is_quantity": is_quantity,
            "sapphire_format_quantity": format_quantity,
            "sapphire_labels": sapphire_labels,
            "sapphire_selector": sapphire_selector,
            "sapphire_pod_security_context": pod_security_context,
            "sapphire_container_security_context": container_security_context,
        }
