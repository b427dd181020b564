"""A naive per-pixel z-score detector: what a dataset gives away without any model.

Each pixel of a test image is compared with the mean and spread of the same pixel over
train/good, at the size the model sees. On aligned parts photographed the same way every time
this is a strong detector, so ddad's maps must beat it; on textures that shift from image to
image it is helpless. ``ddad baseline`` scores its maps exactly as the evaluate stage scores the
pipeline's (same halves, same resolution, same metrics).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ddad.data.imageio import read_image, resize_image
from ddad.data.layout import (
    dataset_channels,
    split_train_val,
    test_images,
    train_images,
    validate_category,
)
from ddad.diffusion.train import TrainConfig
from ddad.evaluation.protocol import Protocol, evaluate_maps
from ddad.maps.scoring import DEFAULT_SCORE, ScoreSettings, finished
from ddad.maps.threshold import DetectSettings, threshold_at_rate
from ddad.progress import progress_bar

_EPS = 1e-3  # a quarter of an 8-bit level, so constant pixels do not divide by zero


def zscore_maps(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per test image, each pixel's absolute z-score against train, summed over channels.

    Both arrays are N×H×W×C floats in [0, 1]; returns N×H×W maps for the test images.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    return (np.abs(test - mean) / (std + _EPS)).sum(axis=-1)


def zscore_report(
    root: Path,
    category: str,
    protocol: Protocol,
    resize: str = "bicubic",
    score: ScoreSettings = DEFAULT_SCORE,
    held_out: int = TrainConfig().val_images,
    held_out_seed: int = 0,
) -> dict[str, Any]:
    """The z-score baseline's figures on an MVTec-layout category (ddad.evaluation.protocol's
    ``evaluate_maps``): images read and resized exactly as the pipeline reads them (any format
    it accepts, to ``protocol.image_size``), each map finished as ``score`` says (the
    pipeline's ``score.closing`` and ``score.image_score``), scored under the evaluate stage's
    protocol. Its detect threshold, for the share of defect-free pixels lit
    (``lit_defective``, ``lit_good``), is learned as the pipeline's is: from ``held_out``
    train/good images, chosen by ``held_out_seed`` as the train stage chooses them
    (``train.val_images``, ``train.seed``), that the mean and spread leave out."""
    root = Path(root)
    validate_category(root, category)
    channels = dataset_channels(root, category)
    items = test_images(root, category)
    fit, held_out = split_train_val(train_images(root, category), held_out, held_out_seed)
    paths = [*fit, *held_out, *(item.path for item in items)]
    pixels = np.stack(
        [
            resize_image(read_image(path, channels), protocol.image_size, resize)
            for path in progress_bar(paths, desc=f"{category}: reading", unit="image")
        ]
    )
    train, scored = pixels[: len(fit)], pixels[len(fit) :]
    finals = [finished(amap, score) for amap in zscore_maps(train, scored)]
    good = [value for _, value in finals[: len(held_out)]]
    rate = DetectSettings().false_alarm_rate
    threshold = threshold_at_rate(good, rate).value if good else math.nan  # one training image
    maps, scores = zip(*finals[len(held_out) :], strict=True)
    return evaluate_maps(items, scores, maps, protocol, threshold)
