"""Stopping a training stage and going on: the saved state, whose training it is, and what an
interrupted run tells the user.

A training stage (train, denoiser) saves its state under models/checkpoints/, outside its
output, which DVC removes before the stage runs; the next run of the same training (the same
``training_fingerprint``) goes on from there to the same weights, and the file goes once the
model is saved. DDAD_CHECKPOINT_SECONDS sets the minimum interval between saves (tests shorten
it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ddad.diffusion import distributed
from ddad.diffusion.models import save_atomically
from ddad.diffusion.train import Resume

CHECKPOINTS_DIR = Path("models/checkpoints")
EVERY_S_ENV = "DDAD_CHECKPOINT_SECONDS"


def checkpoint_path(folder: str) -> Path:
    """Where the training named ``folder`` (a category, or ``denoiser-<category>``) saves."""
    return CHECKPOINTS_DIR / folder / "state.pt"


def _resumable(path: Path, fingerprint: str, stage: str) -> dict[str, Any] | None:
    """The state this very training saved, or None: a missing file, or (said in one line and
    removed, so no message points at it) an unreadable one or another training's."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        why = "" if saved["fingerprint"] == fingerprint else "made by another training"
    except Exception as exc:  # torch raises many types for a bad file
        why = f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if not why:
        return saved["state"]
    if distributed.is_leader():
        print(f"{stage}: starting at step 0, not from {path}: {why}", file=sys.stderr)
        path.unlink(missing_ok=True)
    return None


def _saver(path: Path, fingerprint: str) -> Callable[[dict[str, Any]], None]:
    """Write a training state atomically: a kill while writing leaves the previous one."""

    def save(state: dict[str, Any]) -> None:
        save_atomically({"fingerprint": fingerprint, "state": state}, path)

    return save


def resume_from(path: Path, fingerprint: str, stage: str) -> Resume:
    """How the training of ``fingerprint`` stops and goes on at ``path`` (rank 0 saves)."""
    every_s = float(os.environ.get(EVERY_S_ENV, "60"))
    save = _saver(path, fingerprint) if distributed.is_leader() else None
    return Resume(_resumable(path, fingerprint, stage), save, every_s)


def interrupted_training(stage: str, path: Path, output: Path) -> str:
    """Where the next run goes on from, and how to get the last committed ``output`` back (DVC
    removed it before training started)."""
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state"]["step"]
        then = f"the next `dvc repro` resumes from step {step}, saved in {path}"
    except Exception:  # no checkpoint, or one no run can resume
        then = "no training state was saved yet: the next `dvc repro` trains from step 0"
    return f"{stage}: {then}; the last committed model comes back with `dvc checkout {output}`"
