"""train@<category>: fit the diffusion model on train/good only, holding a few images out.

The held-out images are written into the checkpoint's metadata: reconstruct uses them as good
validation images (for the detection threshold and the plot scales), never as training data.
So is the input size, chosen here once (ddad.params.input_size: ``data.image_size: auto`` follows
the photographs) and said in the log: reconstruct, score and ``ddad detect`` read it there.
With train.steps 0 the fetched weights pass through untouched. Training runs on ``device``
(mixed precision on CUDA, ddad.diffusion.train), over every rank of dist with the global batch
train.batch_size; rank 0 writes the checkpoint.

Training saves its state to models/checkpoints/<category>/state.pt every minute or so and when
Ctrl-C stops it, and the next run of the same training goes on from there (stages.resume).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
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
    save_checkpoint,
)
from ddad.diffusion.train import train_diffusion, training_fingerprint
from ddad.params import input_size, train_config
from stages.common import load_model_input, model_channels, run_stage, sized, write_json
from stages.resume import checkpoint_path, interrupted_training, resume_from


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


def _interrupted(argv: list[str]) -> str:
    category = argv[0]
    return interrupted_training(
        f"train@{category}", checkpoint_path(category), TRAINED_DIR / category
    )


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
    checkpoint = checkpoint_path(category)
    curve: list[dict[str, float]] = []
    validation_curve: list[dict[str, float]] = []
    if tp["steps"]:
        config = train_config(params)
        images = _stack(fit, channels, params)
        validation = _stack(held_out, channels, params)
        device = resolve_device(params["device"])
        ranks = distributed.world_size()
        fingerprint = training_fingerprint(model, images, validation, config, device, ranks)
        resume = resume_from(checkpoint, fingerprint, f"train@{category}")
        state = resume.state
        if distributed.is_leader():
            steps = tp["steps"]
            print(f"train@{category}: {len(fit)} images, {len(held_out)} held out, {steps} steps")
            if state is not None:
                print(
                    f"train@{category}: resuming at step {state['step']} of {steps} from "
                    f"{checkpoint.parent}"
                )
        model, log = train_diffusion(
            model,
            build_diffusion(params["model"]["preset"]),
            images,
            config,
            validation,
            device=device,
            progress=distributed.is_leader(),
            resume=resume,
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
