"""A naive per-pixel z-score detector, to show that a dataset needs more than pixel statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from ddad.errors import DdadError

_EPS = 1e-3  # a quarter of an 8-bit level, so constant pixels do not divide by zero


def zscore_image_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per test image: the largest per-pixel z-score against train, summed over channels.

    Both arrays are N×H×W×C floats in [0, 1]; returns one score per test image.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    z = (np.abs(test - mean) / (std + _EPS)).sum(axis=-1)
    return z.reshape(len(test), -1).max(axis=1)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.float32) / 255.0


def _load_images(paths: list[Path]) -> np.ndarray:
    """N×H×W×C floats in [0, 1]; grayscale gets a channel axis."""
    stacked = np.stack([_read(path) for path in paths])
    return stacked[..., None] if stacked.ndim == 3 else stacked


def zscore_auroc(root: Path, category: str) -> float:
    """Image AUROC of the z-score baseline on an MVTec-layout category under root."""
    folder = Path(root) / category
    train_paths = sorted((folder / "train" / "good").glob("*.png"))
    test_paths = sorted((folder / "test").glob("*/*.png"))
    labels = [path.parent.name != "good" for path in test_paths]
    if not train_paths or len(set(labels)) < 2:
        raise DdadError(
            f"{folder} needs PNGs in train/good, test/good and a test/<defect> folder: "
            "generate or download the category first"
        )
    scores = zscore_image_scores(_load_images(train_paths), _load_images(test_paths))
    return float(roc_auc_score(labels, scores))
