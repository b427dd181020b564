"""The detect threshold: learned from held-out good images' scores, read from scores.csv."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddad.errors import DdadError
from ddad.maps.threshold import is_defect, threshold_from_good, validation_scores


def test_the_threshold_is_the_highest_good_score_so_every_good_image_is_ok() -> None:
    """The highest good score itself, not a statistic near it (a mean plus three standard
    deviations, a high quantile): every good image it was learned from is OK, anything above it
    a defect."""
    good = np.random.default_rng(0).normal(1.0, 0.1, 50)
    threshold = threshold_from_good(good)
    assert threshold == good.max()
    assert not any(is_defect(score, threshold) for score in good)
    assert is_defect(np.nextafter(threshold, np.inf), threshold)
    assert threshold_from_good([0.25]) == 0.25


@pytest.mark.parametrize("scores", [[], [0.1, float("nan")], [float("inf")]])
def test_threshold_refuses_empty_or_non_finite_scores(scores: list[float]) -> None:
    with pytest.raises(ValueError):
        threshold_from_good(scores)


def test_validation_scores_are_the_held_out_good_rows(tmp_path: Path) -> None:
    csv = tmp_path / "scores.csv"
    rows = {"split": ["test", "validation", "validation"], "score": [9.0, 0.1, 0.3]}
    pd.DataFrame(rows).to_csv(csv, index=False)
    np.testing.assert_array_equal(validation_scores(csv), [0.1, 0.3])
    assert validation_scores(tmp_path / "absent.csv").size == 0
    pd.DataFrame({"score": [1.0]}).to_csv(csv, index=False)
    with pytest.raises(DdadError, match="expected columns split and score"):
        validation_scores(csv)
