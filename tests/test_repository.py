"""What commands write into a clone stays out of git: `git status` shows only a user's changes."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("written", ["dvc_plots/index.html", "detections/crack_000.png"])
def test_command_outputs_are_git_ignored(written):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", written], cwd=REPO)
    assert ignored.returncode == 0, f"{written} would show in git status"
