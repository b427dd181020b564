"""The nearest good patch: zero distance for what the bank holds, a high distance for a patch
unlike every good one, a bounded bank, the windowed search, the whitening that evens out
loud and redundant channels, and the greedy coreset that searches a share of the bank."""

import itertools
import math

import pytest
import torch
from tiny_model import stripes

from ddad.maps.scoring import ScoreSettings
from ddad.maps.search import (
    AnywhereSearch,
    coreset,
    feature_bank,
    nearby_search,
    search_for,
    whitened,
)
from ddad.maps.sources import unet_features


def nearest_distance_maps(features, bank, size):
    return AnywhereSearch(bank).distances(features, size)


def nearby_distance_maps(features, bank, radius, size):
    return nearby_search([bank], radius).distances(features, size)


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


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_nearby_search_matches_a_brute_force_window_at_every_cell(radius):
    """Every cell, the border's cut-off windows included, and banks given in several batches."""
    generator = torch.Generator().manual_seed(radius)
    features = torch.randn(3, 3, 5, 6, generator=generator)
    bank = torch.randn(4, 3, 5, 6, generator=generator)
    found = nearby_search([bank[:1], bank[1:]], radius).distances(features, (5, 6))
    for i, j in itertools.product(range(5), range(6)):
        window = bank[
            :, :, max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1
        ]
        rows = window.permute(0, 2, 3, 1).reshape(-1, 3)
        expected = torch.cdist(features[:, :, i, j], rows).min(dim=1).values
        torch.testing.assert_close(found[:, i, j], expected)


def test_the_bank_is_its_cells_as_maps():
    bank = torch.randn(5, 2, 4, 3, generator=torch.Generator().manual_seed(1))
    search = nearby_search([bank[:2], bank[2:]], 1)
    assert search.cells.shape == (4, 3, 2, 5) and torch.equal(search.bank, bank)


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
    white = whitened(nearby_search([bank], radius=1))
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
    white = whitened(nearby_search([bank], radius=1))
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
        search = AnywhereSearch(rows) if radius < 0 else nearby_search([bank], radius)
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


def clustered_cells(generator, sizes, channels=4, h=3, w=2):
    """Maps [M, D, h, w] whose vectors at each cell fall in tight clusters of ``sizes`` (the
    clusters' centres 10 apart or more, each vector within 0.01 of its centre per channel)."""
    centres = 10 * torch.eye(channels)[: len(sizes)][:, :, None, None] + torch.randn(
        len(sizes), channels, h, w, generator=generator
    )
    members = torch.cat([centres[i].expand(n, -1, -1, -1) for i, n in enumerate(sizes)])
    return members + 0.01 * torch.rand(members.shape, generator=generator)


def cell_sets(maps):
    """Each cell's vectors of maps [M, D, h, w]: [h*w, M, D]."""
    return maps.flatten(2).permute(2, 0, 1)


def same(vectors, others):
    """[..., len(vectors), len(others)]: which of ``vectors`` [..., K, D] equal which of
    ``others`` [..., M, D], exactly."""
    return (vectors[..., :, None, :] == others[..., None, :, :]).all(dim=-1)


def coverage(bank_sets, kept_sets):
    """The largest distance from a bank vector to its nearest kept vector, over every set."""
    return torch.cdist(bank_sets, kept_sets).min(dim=2).values.max()


@pytest.mark.parametrize("radius", [-1, 2])
def test_a_coreset_of_the_whole_bank_is_the_bank_itself(radius):
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 3, 5, 5, generator=generator)
    features = [maps[:3], maps[3:]]
    query = torch.randn(2, 3, 5, 5, generator=generator)
    settings = ScoreSettings(search_radius=radius, bank_vectors=100)
    exact = search_for(list(features), settings)
    assert coreset(exact, 1.0).inner is exact.inner
    assert coreset(exact.inner, 0.999) is exact.inner
    kept = search_for(list(features), settings).distances(query, (7, 7))
    assert torch.equal(kept, exact.distances(query, (7, 7)))


def test_a_cell_coreset_keeps_a_share_of_each_cells_own_vectors():
    maps = torch.randn(10, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    for share in (0.1, 0.25, 0.5):
        kept = coreset(nearby_search([maps], radius=1), share)
        count = math.ceil(share * 10)
        assert kept.radius == 1 and kept.bank.shape == (count, 3, 4, 5)
        matches = same(cell_sets(kept.bank), cell_sets(maps))  # [h*w, count, M]
        assert (matches.sum(dim=2) == 1).all()  # each kept vector is its own cell's
        assert (matches.sum(dim=1) <= 1).all()  # and none is kept twice


def test_a_row_coreset_keeps_a_share_of_distinct_rows():
    rows = torch.randn(200, 130, generator=torch.Generator().manual_seed(0))  # projected
    kept = coreset(AnywhereSearch(rows), 0.05).bank
    matches = same(kept, rows)
    assert kept.shape == (10, 130) and (matches.sum(dim=1) == 1).all()
    assert (matches.sum(dim=0) <= 1).all()


def test_the_greedy_coreset_covers_every_cluster_that_a_random_subset_misses():
    """37 vectors at one place of a cell and one at each of three others: four greedy picks
    land one in each cluster; four random ones almost always miss a single vector."""
    generator = torch.Generator().manual_seed(0)
    maps = clustered_cells(generator, [37, 1, 1, 1])
    kept = coreset(nearby_search([maps], radius=0), 0.1).bank
    assert len(kept) == 4 and coverage(cell_sets(maps), cell_sets(kept)) < 0.05
    chosen = torch.randperm(len(maps), generator=generator)[:4]
    assert coverage(cell_sets(maps), cell_sets(maps[chosen])) > 5
    rows = cell_sets(maps)[0]
    assert coverage(rows[None], coreset(AnywhereSearch(rows), 0.1).bank[None]) < 0.05


def test_coreset_distances_are_at_least_exact_and_equal_where_the_nearest_was_kept():
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(40, 3, 4, 4, generator=generator)
    query = torch.randn(5, 3, 4, 4, generator=generator)
    exact, cored = {}, {}
    for radius in (0, 1):
        exact[radius] = nearby_search([maps], radius).distances(query, (4, 4))
        cored[radius] = coreset(nearby_search([maps], radius), 0.25).distances(query, (4, 4))
        assert (cored[radius] >= exact[radius] - 1e-5).all()
        assert (cored[radius] > exact[radius] + 1e-3).any()
    kept = coreset(nearby_search([maps], 0), 0.25).bank
    bank_sets = cell_sets(maps)  # [h*w, M, D]
    closest = torch.cdist(cell_sets(query), bank_sets).argmin(dim=2)  # [h*w, N]
    nearest = bank_sets.gather(1, closest[..., None].expand(-1, -1, 3))  # its vectors
    was_kept = same(nearest, cell_sets(kept)).any(dim=2).T.reshape(5, 4, 4)
    assert was_kept.any() and not was_kept.all()
    torch.testing.assert_close(cored[0][was_kept], exact[0][was_kept])


def test_row_coreset_distances_are_at_least_exact_and_equal_where_the_nearest_was_kept():
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(300, 4, generator=generator)
    query = torch.randn(2, 4, 5, 5, generator=generator)
    kept = coreset(AnywhereSearch(rows), 0.2)
    exact, cored = (s.distances(query, (5, 5)) for s in (AnywhereSearch(rows), kept))
    nearest = rows[torch.cdist(query.permute(0, 2, 3, 1), rows).argmin(dim=3)]
    was_kept = same(nearest, kept.bank).any(dim=3)
    assert (cored >= exact - 1e-5).all() and was_kept.any() and not was_kept.all()
    torch.testing.assert_close(cored[was_kept], exact[was_kept])


def test_the_coreset_is_chosen_in_the_whitened_space_searched():
    """search_for cuts the whitened bank: the searched bank is a coreset of whitened vectors,
    and the whitening is the whole bank's."""
    generator = torch.Generator().manual_seed(4)
    maps = torch.randn(20, 3, 4, 4, generator=generator)
    maps[:, 1] *= 50  # a loud channel: whitening changes which vectors are far apart
    white = whitened(nearby_search([maps], radius=1))
    cut = search_for([maps], ScoreSettings(coreset=0.2))
    torch.testing.assert_close(cut.whitening.matrix, white.whitening.matrix)
    assert torch.equal(cut.inner.bank, coreset(white.inner, 0.2).bank)
