"""The detect threshold: the image score above which an image is called a defect, chosen from
good images' scores alone (a factory rarely has labelled defects when it starts inspecting) at
the false-alarm rate the line asks for (params.yaml ``detect``).

The score stage scores many good images without letting them into the reference they are
scored against: the training images k-fold (``good_fold`` rows of scores.csv) and the held-out
ones (``validation``). ``ddad detect``, evaluate and the plot stage all take the threshold from
those scores by ``threshold_at_rate`` (``scores_threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ddad.errors import DdadError

GOOD_SPLITS = ("good_fold", "validation")  # scores.csv's rows of good images for the threshold


@dataclass(frozen=True)
class DetectSettings:
    """How the threshold is chosen (params.yaml ``detect``, same defaults): the share of good
    parts it may flag, and how many folds of the training images the score stage scores."""

    false_alarm_rate: float = 0.01
    folds: int = 5


@dataclass(frozen=True)
class Threshold:
    """A threshold and how it was chosen: the ``rank``-th highest of ``good`` good scores, for
    the asked ``false_alarm_rate``."""

    value: float
    false_alarm_rate: float
    good: int
    rank: int

    @property
    def expected_rate(self) -> float:
        """The chance that a new good image scores above it: rank / (good + 1), for scores
        that are exchangeable with those it was chosen from."""
        return self.rank / (self.good + 1)

    @property
    def too_few(self) -> bool:
        """Whether there were too few good scores for the rate: the highest then flags more."""
        return self.expected_rate > self.false_alarm_rate

    def describe(self) -> str:
        """One line for a person: which good score it is, and what it flags."""
        which = "highest" if self.rank == 1 else f"{_ordinal(self.rank)} highest"
        told = f"the {which} of {self.good} good images' scores"
        if self.too_few:
            needed = math.ceil(1 / self.false_alarm_rate) - 1
            return (
                f"{told}: too few for a false-alarm rate of {self.false_alarm_rate:g} (that "
                f"takes {needed}), so about 1 good part in {self.good + 1} is flagged"
            )
        return (
            f"{told}, for a false-alarm rate of {self.false_alarm_rate:g}: "
            f"{self.expected_rate:.2%} of good parts expected flagged"
        )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def threshold_at_rate(scores: Sequence[float] | np.ndarray, false_alarm_rate: float) -> Threshold:
    """The threshold that flags a new good image with probability at most ``false_alarm_rate``.

    With n good scores, the r-th highest is exceeded by a new good image with probability
    r / (n + 1) (their ranks are equally likely), so r = floor(rate * (n + 1)), the largest
    that keeps within the rate. Fewer than 1 / rate - 1 scores leave r = 0: the highest is
    taken, and flags about 1 good part in n + 1 (``Threshold.too_few``). A new image is a
    defect only strictly above it (``is_defect``).
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("threshold_at_rate needs at least one good image's score")
    if not np.isfinite(values).all():
        raise ValueError("threshold_at_rate got a score that is nan or infinite")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate {false_alarm_rate!r}; expected a share in (0, 1)")
    rank = max(1, math.floor(false_alarm_rate * (values.size + 1) + 1e-9))
    return Threshold(float(values[-rank]), false_alarm_rate, int(values.size), rank)


def good_scores(scores_csv: Path) -> np.ndarray:
    """Scores of the good images the threshold is chosen from (``GOOD_SPLITS`` rows); empty
    when there are none or no file."""
    if not scores_csv.is_file():
        return np.empty(0)
    table = pd.read_csv(scores_csv)
    if not {"split", "score"} <= set(table.columns):
        raise DdadError(
            f"{scores_csv}: expected columns split and score; run `dvc repro` to rewrite it"
        )
    return table.loc[table["split"].isin(GOOD_SPLITS), "score"].to_numpy(dtype=np.float64)


def scores_threshold(scores_csv: Path, false_alarm_rate: float) -> Threshold | None:
    """The threshold at ``false_alarm_rate`` of the ``good_scores`` a score stage wrote; None
    when it wrote none."""
    good = good_scores(scores_csv)
    return threshold_at_rate(good, false_alarm_rate) if good.size else None


def is_defect(score: float, threshold: float) -> bool:
    """ddad detect's verdict: a defect only strictly above the threshold, so the good score it
    was chosen as is itself OK."""
    return bool(score > threshold)


def mistake(label: int, score: float, threshold: float) -> str:
    """What the verdict gets wrong about a labelled image: "false alarm" (a good image called a
    defect), "missed" (a defect called OK) or "" (right), so pictures can mark the errors."""
    if is_defect(score, threshold):
        return "" if label else "false alarm"
    return "missed" if label else ""
