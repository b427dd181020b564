"""The installed package imports from any folder, including one that holds the clone.

A folder named ``ddad`` in the current folder (the clone, seen from its parent) is a namespace
package to Python; setuptools' default editable install puts its finder after that, so
``from ddad import Detector`` failed there. The README's install (editable_mode=compat) puts the
project root on sys.path, where the real package wins.
"""

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest


def test_the_installed_package_wins_over_a_folder_named_ddad(tmp_path):
    try:
        distribution("ddad")
    except PackageNotFoundError:
        pytest.skip("ddad is not installed; install it as the README says")
    (tmp_path / "ddad" / "ddad").mkdir(parents=True)  # a clone, seen from its parent folder
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", "from ddad import Detector; print(Detector.__module__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
    assert result.stdout.strip() == "ddad.detect"
