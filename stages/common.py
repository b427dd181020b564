"""What every stage shares: the folder conventions, the dataset manifest, and the error wrapper."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddad.errors import DdadError
from ddad.imageio import display_size, read_image, read_mask, resize_image, resize_mask
from ddad.layout import TestImage
from ddad.preprocess import to_model_range
from stages.params import load_params

DATA_DIR = Path("data/images")
MANIFEST = Path("data/dataset.json")
PRETRAINED_DIR = Path("models/pretrained")
TRAINED_DIR = Path("models/trained")
RUNS_DIR = Path("runs")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


def run_stage(main: Callable[[dict[str, Any], list[str]], None]) -> None:
    """Validate params, run ``main(params, argv)``; user errors become one line and exit 2."""
    try:
        main(load_params(), sys.argv[1:])
    except DdadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run `dvc repro` to go on", file=sys.stderr)
        sys.exit(130)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_manifest() -> dict[str, Any]:
    """The dataset description fetch_data wrote: its root and each category's type and channels."""
    if not MANIFEST.is_file():
        raise DdadError(f"{MANIFEST}: missing; run `dvc repro fetch_data` first")
    return json.loads(MANIFEST.read_text())


def category_info(manifest: dict[str, Any], category: str) -> dict[str, Any]:
    """One category's manifest entry, or a one-line error listing the known ones."""
    if category not in manifest["categories"]:
        known = ", ".join(manifest["categories"])
        raise DdadError(
            f"category {category!r} is not in the data ({known}); check data.categories"
        )
    return manifest["categories"][category]


def model_channels(params: dict[str, Any], data_channels: int) -> int:
    """Channels the model sees: the data's, unless forced, and RGB for the OpenAI model."""
    wanted = params["data"]["channels"]
    if wanted != "auto":
        return int(wanted)
    if params["model"]["preset"] == "openai-256-uncond":
        return 3
    return data_channels


def load_model_input(path: Path, channels: int, params: dict[str, Any]) -> np.ndarray:
    """An image as the model sees it: resized, in [-1, 1], [C, H, W] float32."""
    data = params["data"]
    image = resize_image(read_image(path, channels), data["image_size"], data["resize"])
    return to_model_range(image, data["normalization"]).transpose(2, 0, 1).copy()


def load_test_mask(item: TestImage, params: dict[str, Any]) -> np.ndarray:
    """The ground truth at model size (all False for good images)."""
    size = params["data"]["image_size"]
    if item.mask is None:
        return np.zeros((size, size), dtype=bool)
    mask = read_mask(item.mask, display_size(item.path))
    return resize_mask(mask, size, params["data"]["mask_resize"])


def resolve_device(wanted: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DdadError("device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def timesteps_for(params: dict[str, Any], category: str) -> int:
    """The category's noise level: its override, else the global one."""
    rec = params["reconstruct"]
    return int(rec["timesteps_per_category"].get(category, rec["timesteps"]))
