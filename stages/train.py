"""train@<category>: fit the diffusion model on train/good only, holding a few images out.

The held-out images are written into the checkpoint's metadata: reconstruct uses them as good
validation images (for the detection threshold and the plot scales), never as training data.
So is the input size, chosen here once (ddad.params.input_size: ``data.image_size: auto`` follows
the photographs) and said in the log: reconstruct, score and ``ddad detect`` read it there.
With train.steps 0 the fetched weights pass through untouched. Training runs on ``device``
(mixed precision on CUDA, ddad.diffusion.train), over every rank of dist with the global batch
train.batch_size; rank 0 writes the checkpoint.

Training saves its state to models/checkpoints/<category>/state.pt (outside the stage's output,
which DVC removes before the stage runs) every minute or so and when Ctrl-C stops it, and the
next run of the same training goes on from there to the same weights; the file goes once the
model is saved. DDAD_CHECKPOINT_SECONDS sets the minimum interval (tests shorten it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddad.data.imageio import sides
from ddad.data.layout import (
    DATA_DIR,
    PLOTS_DIR,
    PRETRAINED_DIR,
    TRAINED_DIR,
    dataset_channels,
    split_train_val,
    train_images,
)
from ddad.diffusion import distributed
from ddad.diffusion.engine import resolve_device
from ddad.diffusion.models import (
    build_diffusion,
    build_model,
    load_weights,
    read_checkpoint,
    save_atomically,
    save_checkpoint,
)
from ddad.diffusion.train import Resume, train_diffusion, training_fingerprint
from ddad.params import input_size, train_config
from stages.common import load_model_input, model_channels, run_stage, sized, write_json

CHECKPOINTS_DIR = Path("models/checkpoints")
EVERY_S_ENV = "DDAD_CHECKPOINT_SECONDS"


def _starting_model(
    preset: str, channels: int, size: int, seed: int
) -> tuple[torch.nn.Module, Path | None]:
    """The preset's model with the fetched weights (or a seeded random start), and their file."""
    torch.manual_seed(seed)
    model = build_model(preset, channels, size, for_training=True)
    marker = json.loads((PRETRAINED_DIR / "preset.json").read_text())
    if not marker["weights"]:
        return model, None
    path = PRETRAINED_DIR / marker["weights"]
    load_weights(model, read_checkpoint(path), path)
    return model, path


def _stack(paths: list[Path], channels: int, params: dict[str, Any]) -> torch.Tensor:
    return torch.from_numpy(np.stack([load_model_input(p, channels, params) for p in paths]))


def _checkpoint(category: str) -> Path:
    return CHECKPOINTS_DIR / category / "state.pt"


def _resumable(path: Path, fingerprint: str, category: str) -> dict[str, Any] | None:
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
        print(f"train@{category}: starting at step 0, not from {path}: {why}", file=sys.stderr)
        path.unlink(missing_ok=True)
    return None


def _saver(path: Path, fingerprint: str) -> Callable[[dict[str, Any]], None]:
    """Write a training state atomically: a kill while writing leaves the previous one."""

    def save(state: dict[str, Any]) -> None:
        save_atomically({"fingerprint": fingerprint, "state": state}, path)

    return save


def _interrupted(argv: list[str]) -> str:
    """Where the next run goes on from, and how to get the last committed model back (DVC
    removed it before training started)."""
    category = argv[0]
    path = _checkpoint(category)
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state"]["step"]
        then = f"the next `dvc repro` resumes from step {step}, saved in {path}"
    except Exception:  # no checkpoint, or one no run can resume
        then = "no training state was saved yet: the next `dvc repro` trains from step 0"
    back = f"`dvc checkout {TRAINED_DIR / category}`"
    return f"train@{category}: {then}; the last committed model comes back with {back}"


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    chosen = input_size(params, DATA_DIR, category)
    params = sized(params, chosen.size)
    tp, data = params["train"], params["data"]
    channels = model_channels(params, dataset_channels(DATA_DIR, category))
    fit, held_out = split_train_val(train_images(DATA_DIR, category), tp["val_images"], tp["seed"])
    model, pretrained = _starting_model(
        params["model"]["preset"], channels, data["image_size"], tp["seed"]
    )
    if distributed.is_leader():
        height, width = sides(chosen.size)
        print(f"train@{category}: input {height} x {width} px ({chosen.source})")
    checkpoint = _checkpoint(category)
    curve: list[dict[str, float]] = []
    validation_curve: list[dict[str, float]] = []
    if tp["steps"]:
        config = train_config(params)
        images = _stack(fit, channels, params)
        validation = _stack(held_out, channels, params)
        device = resolve_device(params["device"])
        ranks = distributed.world_size()
        fingerprint = training_fingerprint(model, images, validation, config, device, ranks)
        state = _resumable(checkpoint, fingerprint, category)
        if distributed.is_leader():
            steps = tp["steps"]
            print(f"train@{category}: {len(fit)} images, {len(held_out)} held out, {steps} steps")
            if state is not None:
                print(
                    f"train@{category}: resuming at step {state['step']} of {steps} from "
                    f"{checkpoint.parent}"
                )
        every_s = float(os.environ.get(EVERY_S_ENV, "60"))
        save = _saver(checkpoint, fingerprint) if distributed.is_leader() else None
        model, log = train_diffusion(
            model,
            build_diffusion(params["model"]["preset"]),
            images,
            config,
            validation,
            device=device,
            progress=distributed.is_leader(),
            resume=Resume(state, save, every_s),
        )
        curve = [{"step": s, "loss": v} for s, v in log.train]
        validation_curve = [{"step": s, "loss": v} for s, v in log.validation]
    if not distributed.is_leader():
        return  # rank 0 writes the one checkpoint
    meta = {
        "category": category,
        "preset": params["model"]["preset"],
        "channels": channels,
        "image_size": data["image_size"],
        "trained_steps": tp["steps"],
        "validation_images": [str(p.relative_to(DATA_DIR)) for p in held_out],
        "validation_loss": validation_curve,
    }
    out = TRAINED_DIR / category
    shutil.rmtree(out, ignore_errors=True)
    if tp["steps"] == 0 and pretrained:
        out.mkdir(parents=True)
        os.link(pretrained, out / "model.pt")
    else:
        save_checkpoint(model, out / "model.pt")
    write_json(out / "meta.json", meta)
    write_json(PLOTS_DIR / "train" / f"{category}.json", curve)
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    print(f"train@{category}: saved {out / 'model.pt'}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main, sharded=True, interrupted=_interrupted)
