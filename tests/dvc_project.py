"""Tiny throw-away DVC projects holding the pipeline's code, for the tests that run `dvc repro`:
how one is made, how its params change, and what `dvc` says of it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# One thread per stage: on a few shared cores, torch's spinning threads slow small models 10x.
ENV = os.environ | {
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "DVC_NO_ANALYTICS": "1",
    "OMP_NUM_THREADS": "1",
}
TINY = {
    "data": {
        "categories": ["stripes"],
        "synthetic": {"seed": 0, "train": 12, "test_good": 4, "test_defect": 6},
        "image_size": 16,
    },
    "train": {"steps": 2, "batch_size": 4, "crop": 0, "val_images": 2},
    "reconstruct": {"ensemble": 1, "steps": 2, "batch_size": 2},
}


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` written over it, nested sections merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and key in base else value
    return out


def run_in(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool of this environment (dvc, python) in ``project``; ``check``: fail on an
    error, with its output."""
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=project,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def set_params(project: Path, *changes: dict) -> None:
    """The repository's params.yaml with TINY and then ``changes`` over it, as the project's."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for change in (TINY, *changes):
        params = merged(params, change)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(folder: Path, *changes: dict) -> Path:
    """A fresh git + DVC project holding the pipeline's code and tiny params."""
    folder.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", "data/own/README.md"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, folder / name)
    for package in ("stages", "ddad"):
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__py*"))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    run_in(folder, "dvc", "init", "-q")
    set_params(folder, *changes)
    return folder


def stale_stages(project: Path) -> set[str]:
    """Stages `dvc status` calls changed."""
    return set(json.loads(run_in(project, "dvc", "status", "--json").stdout or "{}"))


def ran_stages(repro: subprocess.CompletedProcess) -> list[str]:
    """The stages a `dvc repro` ran, in order."""
    return re.findall(r"Running stage '([^']+)'", repro.stdout + repro.stderr)
