"""The nearest-good-feature map: shapes, zero distance for what the bank holds, a high distance
for a patch unlike every good one, a bounded bank, and the typical map that divides it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ddad.features import (
    GoodReference,
    feature_anomaly_maps,
    feature_bank,
    good_split,
    nearby_distance_maps,
    nearest_distance_maps,
    typical_map,
    unet_features,
)
from ddad.models import build_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny", 1, 16).eval()


def _stripes(count: int) -> torch.Tensor:
    rows = torch.arange(16).float()
    image = torch.sin(rows / 2).view(1, 1, 16, 1).expand(count, 1, 16, 16)
    return image.clone()


def test_features_have_half_the_image_size(model):
    features = unet_features(model, _stripes(2))
    assert features.shape[0] == 2 and features.shape[-2:] == (8, 8)


def test_no_blocks_is_refused(model):
    with pytest.raises(ValueError, match="at least one block"):
        unet_features(model, _stripes(1), blocks=())


def test_the_model_keeps_no_hooks(model):
    unet_features(model, _stripes(1))
    assert all(not block._forward_hooks for block in model.input_blocks)


def test_a_good_image_is_at_zero_distance_and_a_spot_is_not(model):
    good = _stripes(1)
    bank = feature_bank([unet_features(model, good)], max_vectors=10_000)
    spotted = good.clone()
    spotted[0, 0, 6:9, 6:9] = -1.0
    maps = nearest_distance_maps(unet_features(model, torch.cat([good, spotted])), bank, (16, 16))
    assert maps.shape == (2, 16, 16)
    assert maps[0].abs().max() < 1e-2  # cdist's matrix-product form is exact to about 1e-3
    assert maps[1, 6:9, 6:9].mean() > 10 * maps[0].abs().max()


def test_the_bank_is_a_seeded_subset_of_at_most_max_vectors():
    features = [torch.randn(3, 4, 5, 5), torch.randn(2, 4, 5, 5)]
    assert feature_bank(features, 1000).shape == (125, 4)
    small = feature_bank(features, 50, seed=1)
    assert small.shape == (50, 4)
    assert torch.equal(small, feature_bank(features, 50, seed=1))


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


def test_maps_are_divided_by_the_typical_map(model):
    good = _stripes(2)
    spotted = good[:1].clone()
    spotted[0, 0, 6:9, 6:9] = -1.0
    bank = feature_bank([unet_features(model, good)], max_vectors=10_000)
    images = [spotted[0].numpy()]
    raw = feature_anomaly_maps(model, images, GoodReference(bank), sigma=0, kernel_size=0)
    typical = np.full((16, 16), 4.0)
    typical[:8] = 2.0
    divided = feature_anomaly_maps(model, images, GoodReference(bank, typical), 0, 0)
    np.testing.assert_allclose(divided[0], raw[0] / typical)


def test_nearby_search_matches_a_brute_force_window():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 5, 6, generator=generator)
    bank = torch.randn(4, 3, 5, 6, generator=generator)
    found = nearby_distance_maps(features, bank, radius=1, size=(5, 6))
    for i, j in [(0, 0), (2, 3), (4, 5)]:
        window = bank[:, :, max(0, i - 1) : i + 2, max(0, j - 1) : j + 2]
        rows = window.permute(0, 2, 3, 1).reshape(-1, 3)
        expected = torch.cdist(features[:, :, i, j], rows).min(dim=1).values
        torch.testing.assert_close(found[:, i, j], expected)


def test_a_patch_found_only_far_away_is_far_for_the_nearby_search():
    bank = torch.zeros(1, 1, 8, 8)
    bank[0, 0, 0, 0] = 5.0  # the only bright patch of the good image sits in a corner
    query = torch.zeros(1, 1, 8, 8)
    query[0, 0, 6, 6] = 5.0  # the same patch, elsewhere
    anywhere = nearest_distance_maps(query, bank.permute(0, 2, 3, 1).reshape(-1, 1), (8, 8))
    nearby = nearby_distance_maps(query, bank, radius=1, size=(8, 8))
    assert anywhere[0, 6, 6] == 0 and nearby[0, 6, 6] == 5.0
    assert nearby_distance_maps(query, bank, radius=7, size=(8, 8))[0, 6, 6] == 0
