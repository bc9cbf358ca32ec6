"""What an operator runs prints no Python warning: the pinned libraries import cleanly into ansible-core (a warning on
every command's stderr, AWX job output included, hides the ones that matter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ansible_playbook_prints_no_python_warning() -> None:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "validate.yml",
                             "-i", "inventories/local"], cwd=REPO, env=environment, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Warning:" not in result.stderr, result.stderr
