"""The nearest good patch: zero distance for what the bank holds, a high distance for a patch
unlike every good one, a bounded bank, the windowed search, and the whitening that evens out
loud and redundant channels."""

import torch
import torch.nn.functional as F
from tiny_model import stripes

from ddad.maps.search import (
    AnywhereSearch,
    NearbySearch,
    _replicate_padded_cells,
    feature_bank,
    whitened,
)
from ddad.maps.sources import unet_features


def nearest_distance_maps(features, bank, size):
    return AnywhereSearch(bank).distances(features, size)


def nearby_distance_maps(features, bank, radius, size):
    return NearbySearch(bank, radius).distances(features, size)


def test_a_good_image_is_at_zero_distance_and_a_spot_is_not(tiny_unet):
    good = stripes(1)
    bank = feature_bank([unet_features(tiny_unet, good)], max_vectors=10_000)
    spotted = good.clone()
    spotted[0, 0, 6:9, 6:9] = -1.0
    features = unet_features(tiny_unet, torch.cat([good, spotted]))
    maps = nearest_distance_maps(features, bank, (16, 16))
    assert maps.shape == (2, 16, 16)
    assert maps[0].abs().max() < 1e-2  # cdist's matrix-product form is exact to about 1e-3
    assert maps[1, 6:9, 6:9].mean() > 10 * maps[0].abs().max()


def test_the_bank_is_a_seeded_subset_of_at_most_max_vectors():
    features = [torch.randn(3, 4, 5, 5), torch.randn(2, 4, 5, 5)]
    assert feature_bank(features, 1000).shape == (125, 4)
    small = feature_bank(features, 50, seed=1)
    assert small.shape == (50, 4)
    assert torch.equal(small, feature_bank(features, 50, seed=1))


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


def test_the_bank_is_padded_as_replicate_padding_pads_it():
    bank = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(1))
    padded = F.pad(bank, (2, 2, 2, 2), mode="replicate").permute(2, 3, 1, 0)
    assert torch.equal(_replicate_padded_cells(bank, 2), padded)


def test_a_patch_found_only_far_away_is_far_for_the_nearby_search():
    bank = torch.zeros(1, 1, 8, 8)
    bank[0, 0, 0, 0] = 5.0  # the only bright patch of the good image sits in a corner
    query = torch.zeros(1, 1, 8, 8)
    query[0, 0, 6, 6] = 5.0  # the same patch, elsewhere
    anywhere = nearest_distance_maps(query, bank.permute(0, 2, 3, 1).reshape(-1, 1), (8, 8))
    nearby = nearby_distance_maps(query, bank, radius=1, size=(8, 8))
    assert anywhere[0, 6, 6] == 0 and nearby[0, 6, 6] == 5.0
    assert nearby_distance_maps(query, bank, radius=7, size=(8, 8))[0, 6, 6] == 0


def test_whitened_features_have_unit_covariance_over_the_bank():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [2.0, 3.0, 0.0], [0.5, 0.5, 1.0]])
    rows = torch.randn(4000, 3, generator=generator, dtype=torch.float64) @ mixing.double().T
    bank = (rows.float() + 3).reshape(10, 20, 20, 3).permute(0, 3, 1, 2)  # maps [M, D, h, w]
    white = whitened(NearbySearch(bank, radius=1))
    flat = white.inner.bank.permute(0, 2, 3, 1).reshape(-1, 3).double()
    torch.testing.assert_close(
        flat.mean(dim=0), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        torch.cov(flat.T), torch.eye(3, dtype=torch.float64), atol=2e-2, rtol=0
    )  # up to the shrinkage (0.1 % of the mean variance, 1 % of the smallest here)


def test_a_direction_the_bank_never_varies_in_is_shrunk_not_divided_by_zero():
    bank = torch.zeros(2, 2, 4, 4)
    bank[:, 0] = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(0))
    white = whitened(NearbySearch(bank, radius=1))
    assert torch.isfinite(white.whitening.matrix).all()
    query = bank[:1].clone()
    query[0, 1, 2, 2] = 1.0  # a move in the constant channel: far, but finite
    distance = white.distances(query, (4, 4))[0, 2, 2]
    assert torch.isfinite(distance) and distance > 10


def test_whitened_distances_are_those_of_whitened_features():
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(4, 2, 5, 5, generator=generator) * torch.tensor([1.0, 8.0]).view(1, 2, 1, 1)
    query = torch.randn(2, 2, 5, 5, generator=generator)
    for radius in (-1, 2):
        rows = bank.permute(0, 2, 3, 1).reshape(-1, 2)
        search = AnywhereSearch(rows) if radius < 0 else NearbySearch(bank, radius)
        white = whitened(search)
        plain = white.inner
        expected = plain.distances(white.whitening.apply(query), (5, 5))
        torch.testing.assert_close(white.distances(query, (5, 5)), expected)


def test_the_exact_search_matches_every_distance_compared():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 4, 4, generator=generator)
    bank = torch.randn(300, 5, generator=generator)
    queries = features.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(queries, bank).min(dim=1).values.reshape(2, 4, 4)
    torch.testing.assert_close(nearest_distance_maps(features, bank, (4, 4)), brute)
