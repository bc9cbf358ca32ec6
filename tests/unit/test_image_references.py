"""filter_plugins/inputs.py sapphire_image_problems: every image pinned, by digest where the environment requires it."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from conftest import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
inputs = load_module("inputs", "filter_plugins")
problems = inputs.image_problems

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("reference", [
    "redis:7.2.5-alpine",
    "prom/prometheus:v2.53.0",
    "registry.sapphire.internal/sapphire/agent:2026.11.0",
    "registry.internal:5000/sapphire/agent:2026.11.0",
    "localhost:5000/agent:1",
    f"registry.sapphire.internal/sapphire/agent@{DIGEST}",
    f"registry.sapphire.internal/sapphire/agent:2026.11.0@{DIGEST}",
])
def test_a_pinned_reference_passes(reference: str) -> None:
    assert problems({"agents_image": reference}) == []


@pytest.mark.parametrize(("reference", "says"), [
    ("prom/prometheus", "is not pinned"),
    ("registry.internal:5000/sapphire/agent", "is not pinned"),
    ("redis:latest", "is not pinned"),
    ("redis:", "is not an image reference"),
    ("", "is not an image reference"),
    ("Sapphire/Agent:1", "is not an image reference"),
    ("agent:1 ", "is not an image reference"),
    ("agent@sha256:abc", "has a malformed digest"),
    ("agent@sha256:" + "A" * 64, "is not an image reference"),
])
def test_an_unpinned_or_malformed_reference_is_named_by_its_variable(reference: str, says: str) -> None:
    found = problems({"monitoring_grafana_image": reference, "monitoring_prometheus_image": "prom/prometheus:v2.53.0"})
    assert len(found) == 1 and found[0].startswith(f"monitoring_grafana_image: {reference!r} {says}"), found


@pytest.mark.parametrize("required", [True, "true", "yes", "1", 1])
def test_where_digests_are_required_a_tag_alone_is_refused_however_the_variable_was_given(required: object) -> None:
    found = problems({"agents_image": "registry.example/agent:2026.11.0",
                      "agents_coordinator_image": f"registry.example/coordinator:2026.11.0@{DIGEST}"}, required)
    assert found == ["agents_image: 'registry.example/agent:2026.11.0' is pinned by tag only; this environment "
                     "requires a digest (registry.example/agent@sha256:<64 hex>, sapphire_image_digests_required)"]


@pytest.mark.parametrize("required", [False, "false", "no", "0"])
def test_without_the_requirement_a_release_tag_is_enough(required: object) -> None:
    assert problems({"agents_image": "registry.example/agent:2026.11.0"}, required) == []


def test_a_requirement_that_is_not_a_boolean_is_refused_by_name() -> None:
    with pytest.raises(AnsibleFilterError, match="sapphire_image_digests_required must be a boolean"):
        problems({"agents_image": f"agent@{DIGEST}"}, "sometimes")
