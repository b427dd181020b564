"""The detect threshold: chosen from good images' scores at a false-alarm rate, read from
scores.csv's good rows."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddad.errors import DdadError
from ddad.maps.threshold import good_scores, is_defect, scores_threshold, threshold_at_rate


@pytest.mark.parametrize(
    ("count", "rate", "rank"),
    [(199, 0.01, 2), (299, 0.01, 3), (120, 0.01, 1), (99, 0.01, 1), (999, 0.005, 5)],
)
def test_the_threshold_is_the_good_score_a_new_good_image_passes_at_the_rate(
    count: int, rate: float, rank: int
) -> None:
    """The r-th highest of n good scores, r = floor(rate * (n + 1)): a new good image exceeds it
    with probability r / (n + 1), at most the rate; every good score at or below it is OK."""
    good = np.random.default_rng(0).normal(1.0, 0.1, count)
    chosen = threshold_at_rate(good, rate)
    assert chosen.value == np.sort(good)[-rank] and chosen.rank == rank and chosen.good == count
    assert chosen.expected_rate <= rate and not chosen.too_few
    assert sum(is_defect(score, chosen.value) for score in good) == rank - 1
    assert f"for a false-alarm rate of {rate:g}" in chosen.describe()


def test_new_good_images_pass_the_threshold_at_the_rate_asked() -> None:
    """Over many draws of 199 good scores and 2,000 new good images, the share of new ones
    flagged at a 1 % rate comes out at 2 / 200, not above the rate."""
    rng = np.random.default_rng(1)
    flagged = [
        np.mean(rng.normal(size=2000) > threshold_at_rate(rng.normal(size=199), 0.01).value)
        for _ in range(300)
    ]
    assert np.mean(flagged) == pytest.approx(0.01, abs=0.002)


def test_too_few_good_scores_take_the_highest_and_say_what_it_flags() -> None:
    """Eight held-out images cannot give a 1 % rate: the highest is taken, and flags about one
    good part in nine."""
    good = [0.2, 0.9, 0.4, 0.3, 0.5, 0.1, 0.6, 0.7]
    chosen = threshold_at_rate(good, 0.01)
    assert chosen.value == 0.9 and chosen.too_few and chosen.expected_rate == 1 / 9
    assert chosen.describe() == (
        "the highest of 8 good images' scores: too few for a false-alarm rate of 0.01 "
        "(that takes 99), so about 1 good part in 9 is flagged"
    )
    assert threshold_at_rate([0.25], 0.01).value == 0.25


@pytest.mark.parametrize(
    ("scores", "rate"), [([], 0.01), ([0.1, float("nan")], 0.01), ([float("inf")], 0.01), ([1], 0)]
)
def test_threshold_refuses_empty_or_non_finite_scores_and_rates_outside_0_1(
    scores: list[float], rate: float
) -> None:
    with pytest.raises(ValueError):
        threshold_at_rate(scores, rate)


def test_good_scores_are_the_held_out_and_k_fold_rows(tmp_path: Path) -> None:
    csv = tmp_path / "scores.csv"
    splits = ["test", "validation", "good_fold", "validation"]
    pd.DataFrame({"split": splits, "score": [9.0, 0.1, 0.2, 0.3]}).to_csv(csv, index=False)
    np.testing.assert_array_equal(good_scores(csv), [0.1, 0.2, 0.3])
    assert scores_threshold(csv, 0.01).value == 0.3 and scores_threshold(csv, 0.01).good == 3
    assert good_scores(tmp_path / "absent.csv").size == 0
    assert scores_threshold(tmp_path / "absent.csv", 0.01) is None
    pd.DataFrame({"score": [1.0]}).to_csv(csv, index=False)
    with pytest.raises(DdadError, match="expected columns split and score"):
        good_scores(csv)
