"""The detect threshold: learned from held-out good images' scores, read from scores.csv."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddad.errors import DdadError
from ddad.maps.threshold import threshold_from_good, validation_scores


def test_threshold_of_one_score_or_equal_scores_is_that_score() -> None:
    assert threshold_from_good([0.25]) == 0.25
    assert threshold_from_good([0.5, 0.5, 0.5]) == 0.5


def test_threshold_is_the_largest_good_score() -> None:
    assert threshold_from_good(np.array([1.0, 3.0, 2.0])) == 3.0


def test_threshold_separates_synthetic_good_from_shifted_scores() -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(1.0, 0.1, 200)
    threshold = threshold_from_good(good[:50])
    assert (good[50:] <= threshold).mean() > 0.95
    assert (good[50:] + 1.0 > threshold).all()


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
