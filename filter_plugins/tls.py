"""TLS helpers of the pki role: the subject alternative names of a server certificate."""

from __future__ import annotations

import ipaddress
from typing import Any

# Listen addresses that mean every interface (what the server binds, not what a client connects to).
WILDCARDS = frozenset({"", "*", "0.0.0.0", "::"})  # noqa: S104


def subject_alt_names(names: list[str]) -> list[str]:
    """Filter: IP:<address> for an address, DNS:<name> otherwise; duplicates and empty names dropped, order kept."""
    result: list[str] = []
    for name in names:
        name = str(name or "").strip()
        if name in WILDCARDS:  # a wildcard listen address is no name of the server
            continue
        try:
            entry = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            entry = f"DNS:{name}"
        if entry not in result:
            result.append(entry)
    return result


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sapphire_subject_alt_names": subject_alt_names}
