"""The detect threshold: the image score above which an image is called a defect, learned from
held-out good images only (a factory rarely has labelled defects when it starts inspecting).

``ddad detect`` decides with it and the plot stage draws it, so both read it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ddad.errors import DdadError


def threshold_from_good(scores: Sequence[float] | np.ndarray) -> float:
    """The image-score threshold learned from defect-free images' scores: their maximum.

    An image is a defect when it scores strictly above every held-out good image. With n good
    scores, a new good image exceeds their maximum with probability about 1/(n+1), so hold out
    more good images for fewer false alarms. (mean + 3 std was tried first: with the 8 images
    the pipeline holds out, it sat far above the good range and missed most synthetic defects.)
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("threshold_from_good needs at least one good image's score")
    if not np.isfinite(values).all():
        raise ValueError("threshold_from_good got a score that is nan or infinite")
    return float(values.max())


def validation_scores(scores_csv: Path) -> np.ndarray:
    """Scores of the held-out good images (rows with split == validation); empty if none."""
    if not scores_csv.is_file():
        return np.empty(0)
    table = pd.read_csv(scores_csv)
    if not {"split", "score"} <= set(table.columns):
        raise DdadError(
            f"{scores_csv}: expected columns split and score; run `dvc repro` to rewrite it"
        )
    return table.loc[table["split"] == "validation", "score"].to_numpy(dtype=np.float64)


def is_defect(score: float, threshold: float) -> bool:
    """ddad detect's verdict: a defect only strictly above the threshold, so the highest good
    score it was learned from is itself OK."""
    return bool(score > threshold)


def mistake(label: int, score: float, threshold: float) -> str:
    """What the verdict gets wrong about a labelled image: "false alarm" (a good image called a
    defect), "missed" (a defect called OK) or "" (right), so pictures can mark the errors."""
    if is_defect(score, threshold):
        return "" if label else "false alarm"
    return "missed" if label else ""
