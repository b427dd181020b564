"""The nearest-good-feature map: shapes, zero distance for what the bank holds, a high distance
for a patch unlike every good one, and a bounded bank."""

import pytest
import torch

from ddad.features import feature_bank, nearest_distance_maps, unet_features
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
