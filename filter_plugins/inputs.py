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


# Kubernetes names (apimachinery's validation): a namespace is a DNS-1123 label; a label key is a name with an optional
# DNS-1123 subdomain prefix (example.com/name); a label value is empty or a name; a name has 63 characters at most.
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def namespace_name_problems(lists: dict[str, Any]) -> list[str]:
    """Filter: what is not a namespace name in each list, named by its variable ({variable: [name, ...]})."""
    problems = []
    for variable, names in lists.items():
        if not isinstance(names, list):
            problems.append(f"{variable} must be a list of namespace names, not {names!r}")
            continue
        problems += [f"{variable}: {name!r} is not a namespace name (a DNS-1123 label: lower-case letters, digits "
                     f"and '-', at most 63 characters)" for name in names
                     if not isinstance(name, str) or len(name) > 63 or not DNS_1123_LABEL.match(name)]
    return problems


def _label_key_problem(key: Any) -> str:
    if not isinstance(key, str) or key.count("/") > 1:
        return "is not a label key"
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        return "is not a label key (a name of 63 characters at most, optionally prefixed: example.com/name)"
    if prefix and (len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)):
        return "has a prefix that is not a DNS subdomain"
    return ""


def label_problems(selectors: dict[str, Any]) -> list[str]:
    """Filter: what is wrong with each label selector, named by its variable ({variable: {key: value}}). An empty
    selector is refused: it would select every pod."""
    problems = []
    for variable, labels in selectors.items():
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{variable} must be a mapping of at least one label to its value (an empty one would "
                            f"select every pod), not {labels!r}")
            continue
        for key, value in labels.items():
            problem = _label_key_problem(key)
            if problem:
                problems.append(f"{variable}: {key!r} {problem}")
            if not isinstance(value, str) or (value and (len(value) > 63 or not LABEL_NAME.match(value))):
                problems.append(f"{variable}: the value {value!r} of {key!r} is not a label value (a string of 63 "
                                f"characters at most: letters, digits, '-', '_', '.'; quote numbers and booleans)")
    return problems


def unset_secret_problems(secrets: dict[str, Any]) -> list[str]:
    """Filter: each secret ({variable: value}) that is empty or unset, named by its variable, never with its value."""
    return [f"{variable} is empty or undefined: set the vault_* variable it maps to (group_vars/all/main.yml) in the "
            "vault file sapphire_vault_file names (ansible-vault edit; vault/README.md)."
            for variable, value in secrets.items() if value is None or not str(value)]


class FilterModule:
    """sapphire-ops input filters."""

    def filters(self) -> dict[str, Any]:
        return {"sapphire_bool": strict_bool, "sapphire_image_problems": image_problems,
                "sapphire_namespace_name_problems": namespace_name_problems, "sapphire_label_problems": label_problems,
                "sapphire_unset_secret_problems": unset_secret_problems}
