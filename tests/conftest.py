"""Shared pytest fixtures; the helpers themselves live in sapphire_testlib.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sapphire_testlib import REPO_ROOT, LocalClusters, PlaybookResult, kube_binary, run_playbook

__all__ = ["REPO_ROOT", "LocalClusters", "PlaybookResult", "kube_binary", "run_playbook"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def playbook_runner():
    """The run_playbook function, for tests that prefer a fixture."""
    return run_playbook


@pytest.fixture(scope="session")
def local_clusters() -> Iterator[LocalClusters]:
    """The local-primary and local-dr clusters, brought up once (running ones are reused)."""
    result = run_playbook("playbooks/cluster.yml")
    assert result.rc == 0, "cluster playbook failed:\n" + result.explain()
    yield LocalClusters(kubeconfigs={
        name: REPO_ROOT / ".local" / "clusters" / name / "kubeconfig" for name in ("local-primary", "local-dr")
    })
