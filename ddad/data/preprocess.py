"""From [0, 1] pixels to the model's [-1, 1] range, and back for display.

``fixed`` is x*2-1 (the range OpenAI's model was trained on). ``minmax`` is the seed's
per-image stretch of the whole tensor's range to [-1, 1]; it depends on the image content,
defect included, and is kept only to reproduce the seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddad.data.imageio import (
    Size,
    display_size,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    sides,
)
from ddad.data.layout import TestImage

NORMALIZATIONS = ("fixed", "minmax")


def to_model_range(image: np.ndarray, normalization: str = "fixed") -> np.ndarray:
    """Map an image in [0, 1] to [-1, 1] (float32)."""
    image = np.asarray(image, dtype=np.float32)
    if normalization == "minmax":
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image * 2 - 1


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Map [-1, 1] back to [0, 1] for display, clipped."""
    return np.clip((np.asarray(image, dtype=np.float32) + 1) / 2, 0, 1)


def display_image(chw: np.ndarray) -> np.ndarray:
    """A model input [C, H, W] in [-1, 1] as a picture [H, W, C] in [0, 1]."""
    return to_unit_range(chw).transpose(1, 2, 0)


def model_input(
    path: Path, channels: int, size: Size, resize: str = "bicubic", normalization: str = "fixed"
) -> np.ndarray:
    """An image file as the model sees it: [C, H, W] float32 in [-1, 1] at ``size``
    (one side, or [height, width])."""
    image = resize_image(read_image(path, channels), size, resize)
    return to_model_range(image, normalization).transpose(2, 0, 1).copy()


def model_mask(item: TestImage, size: Size, method: str = "nearest") -> np.ndarray:
    """A test image's ground truth at the model's ``size``: all False when good, and when it has
    no mask (``TestImage.has_truth`` tells the two apart)."""
    if item.mask is None:
        return np.zeros(sides(size), dtype=bool)
    return resize_mask(read_mask(item.mask, display_size(item.path)), size, method)


def native_mask(item: TestImage) -> np.ndarray:
    """A test image's ground truth at the photograph's own size (all False when good, and when
    it has no mask, as ``model_mask``): what maps are scored against, so a defect too small to
    survive the model's size still counts."""
    width, height = display_size(item.path)
    if item.mask is None:
        return np.zeros((height, width), dtype=bool)
    return read_mask(item.mask, (width, height))
