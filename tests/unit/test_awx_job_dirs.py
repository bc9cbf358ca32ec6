"""The AWX job harness (tests/awx_job.py) leaves no private data dir behind: each holds a copy of the project, the
test vault's password and the job's events, and goes when the test process that made it exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
MAKE_ONE = "import awx_job; print(awx_job.private_data_dir(4999))"


def make_a_dir(**env: str) -> Path:
    process = subprocess.run([sys.executable, "-c", MAKE_ONE], capture_output=True, text=True, check=True, cwd=TESTS,
                             env={**os.environ, "PYTHONPATH": str(TESTS), **env})
    return Path(process.stdout.strip())


def test_a_jobs_private_data_dir_is_removed_when_the_process_exits() -> None:
    path = make_a_dir()
    assert path.name.startswith("sapphire-awx-job-4999-")
    assert not path.exists()


def test_it_is_kept_for_a_post_mortem_when_asked() -> None:
    path = make_a_dir(SAPPHIRE_KEEP_AWX_JOBS="1")
    try:
        assert path.is_dir()
    finally:
        path.rmdir()
