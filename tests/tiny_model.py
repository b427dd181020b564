"""A tiny random-weight model saved as the train stage saves one, and gray photos to show it: what
the detector's and the command's tests inspect images with."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddad.diffusion.models import build_model, save_checkpoint

SIZE = 16  # the model's side


def write_gray(path: Path, value: float, seed: int = 0) -> Path:
    """A 20x20 gray PNG around ``value`` (resized to the model's 16 on reading)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(value, 0.05, (20, 20)), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(path)
    return path


def tiny_model_dir(folder: Path, validation_images: list[str] | None = None) -> Path:
    """A random-weight tiny 1-channel 16x16 model saved the way the train stage saves one."""
    torch.manual_seed(0)
    model_dir = folder / "models" / "trained" / "toy"
    save_checkpoint(build_model("tiny", 1, SIZE), model_dir / "model.pt")
    meta = {
        "category": "toy",
        "preset": "tiny",
        "channels": 1,
        "image_size": SIZE,
        "validation_images": validation_images or [],
    }
    (model_dir / "meta.json").write_text(json.dumps(meta))
    return model_dir


def stripes(count: int) -> torch.Tensor:
    """``count`` 1-channel 16 x 16 images of horizontal sine stripes in [-1, 1]: a good texture."""
    rows = torch.arange(SIZE).float()
    return torch.sin(rows / 2).view(1, 1, SIZE, 1).expand(count, 1, SIZE, SIZE).clone()
