"""The good images a map learns from: a seeded, disjoint split into the bank and the typical
map's images, the folds that score every training image against a reference without it, and
the typical map that divides every map."""

from pathlib import Path

import numpy as np
import pytest

from ddad.maps.good_images import fold_splits, good_split, typical_map
from ddad.maps.scoring import ScoreSettings

PATHS = [Path(f"{i}.png") for i in range(10)]


def test_bank_and_reference_images_are_disjoint_and_seeded():
    split = good_split(PATHS, bank_images=4, reference_images=3)
    assert len(split.bank) == 4 and len(split.reference) == 3
    assert not set(split.bank) & set(split.reference)
    assert split == good_split(PATHS, 4, 3)


def test_without_reference_images_every_chosen_image_is_in_the_bank():
    assert good_split(PATHS, 4, 0).reference == []
    assert good_split(PATHS, 100, 0).bank == PATHS


def test_reference_images_take_at_most_half_so_a_small_category_keeps_a_bank():
    split = good_split(PATHS[:3], bank_images=200, reference_images=25)
    assert len(split.reference) == 1 and len(split.bank) == 2


def test_each_image_is_scored_once_against_a_reference_of_the_others():
    """Every image lies in one fold, and no fold's bank or typical map holds its own images."""
    settings = ScoreSettings(bank_images=500, reference_images=2)
    folds = fold_splits(PATHS, 3, settings)
    assert sorted(p for scored, _ in folds for p in scored) == sorted(PATHS)
    assert folds[0][0] == [PATHS[0], PATHS[3], PATHS[6], PATHS[9]]  # every third: spread
    for scored, reference in folds:
        held = set(reference.bank) | set(reference.reference)
        assert not held & set(scored) and held | set(scored) == set(PATHS)
        assert len(reference.reference) == 2


def test_folds_are_at_most_one_per_image_and_none_for_a_single_image():
    assert [len(scored) for scored, _ in fold_splits(PATHS[:3], 5, ScoreSettings())] == [1, 1, 1]
    assert fold_splits(PATHS[:1], 5, ScoreSettings()) == []
    assert fold_splits(PATHS, 0, ScoreSettings()) == []


def test_typical_map_is_the_mean_floored_at_one_percent_of_its_mean():
    maps = [np.array([[2.0, 0.0]]), np.array([[4.0, 0.0]])]
    np.testing.assert_allclose(typical_map(maps), [[3.0, 0.015]])
    with pytest.raises(ValueError, match="at least one"):
        typical_map([])
