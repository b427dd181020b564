"""The good images a map learns from: a seeded, disjoint split into the bank and the typical
map's images, and the typical map that divides every map."""

from pathlib import Path

import numpy as np
import pytest

from ddad.maps.good_images import good_split, typical_map

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


def test_typical_map_is_the_mean_floored_at_one_percent_of_its_mean():
    maps = [np.array([[2.0, 0.0]]), np.array([[4.0, 0.0]])]
    np.testing.assert_allclose(typical_map(maps), [[3.0, 0.015]])
    with pytest.raises(ValueError, match="at least one"):
        typical_map([])
