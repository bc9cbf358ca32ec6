"""Controller-side filters that read operator input the same way whatever its source.

A variable can come from YAML (a real boolean), from `-e k=v` (always a string), from JSON extra
vars, or from an AWX survey (a string, or a multiple-choice answer). Argument specs validate such
values but do not convert the variable the tasks read, so every public boolean is read through
`| bool` where it is used, and checked here where a playbook checks its inputs.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

TRUE = {"true", "yes", "on", "y", "1"}
FALSE = {"false", "no", "off", "n", "0"}


def strict_bool(value: Any, name: str = "the value") -> bool:
    """Filter: a boolean from YAML, -e k=v, JSON or a survey; anything else fails naming the variable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise AnsibleFilterError(f"{name} must be a boolean (true/false, yes/no, 1/0), not {value!r}")


# An image reference as the container runtimes read it (distribution/reference): [registry[:port]/]path[:tag][@digest].
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
IMAGE_REFERENCE = re.compile(
    rf"^(?P<name>{_REGISTRY}?{_PATH})(?::(?P<tag>[\w][\w.-]{{0,127}}))?(?:@(?P<digest>[a-z0-9]+:[0-9a-f]+))?$"
)
DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


def image_problems(images: dict[str, Any], require_digest: Any = False) -> list[str]:
    """Filter: what is wrong with each image, named by its variable ({variable: reference}).

    An image must be pinned: a tag other than `latest`, or a digest (`name@sha256:<64 hex>`, a tag beside it is
    allowed and ignored by the runtime). With require_digest (sapphire_image_digests_required, prod) a tag alone is
    refused: a tag can be moved to other content, a digest cannot.
    """
    digest_required = strict_bool(require_digest, "sapphire_image_digests_required")
    problems = []
    for variable, reference in images.items():
        text = reference if isinstance(reference, str) else ""
        match = IMAGE_REFERENCE.match(text)
        if not match:
            problems.append(
                f"{variable}: {reference!r} is not an image reference ([registry/]name[:tag][@sha256:digest])"
            )
        elif match["digest"] and not DIGEST.match(match["digest"]):
            problems.append(f"{variable}: {reference!r} has a malformed digest (sha256: and 64 hex digits)")
        elif match["digest"]:
            continue
        elif digest_required:
            problems.append(
                f"{variable}: {reference!r} is pinned by tag only; this environment requires a digest "
                f"({match['name']}@sha256:<64 hex>, sapphire_image_digests_required)"
            )
        elif not match["tag"] or match["tag"] == "latest":
            problems.append(f"{variable}: {reference!r} is not pinned: give a release tag (not latest) or a digest")
    return problems


class FilterModule:
    """sapphire-ops input filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_bool": strict_bool, "sapphire_image_problems": image_problems}
