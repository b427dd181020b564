"""Per-position Gaussians of good features: the Mahalanobis distance they give, batch-free
fitting, a position-local response, and the reference that uses them in place of the search."""

import pytest
import torch

from ddad.maps.position_gaussian import SHRINK, PositionGaussian, fit_position_gaussian
from ddad.maps.scoring import ScoreSettings
from ddad.maps.search import search_for


def _good(count: int = 40, channels: int = 3, grid: tuple[int, int] = (4, 5)) -> torch.Tensor:
    """Good features whose mean and spread differ by position, with a large offset (float32
    products around zero would cancel it away)."""
    torch.manual_seed(0)
    h, w = grid
    place = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    return 1000 + place + (1 + place / 10) * torch.randn(count, channels, h, w)


def test_distances_are_the_shrunk_mahalanobis_distances_at_each_position():
    good = _good()
    gaussian = fit_position_gaussian(good.split(7))
    query = _good(2) + 0.5
    got = gaussian.distances(query, (4, 5))
    for y, x in ((0, 0), (3, 4), (2, 1)):
        samples = good[:, :, y, x].double()
        covariance = torch.cov(samples.T)
        covariance += SHRINK * covariance.diagonal().mean() * torch.eye(3, dtype=torch.float64)
        centred = query[:, :, y, x].double() - samples.mean(dim=0)
        expected = torch.einsum("nd,de,ne->n", centred, torch.linalg.inv(covariance), centred)
        assert got[:, y, x].double() == pytest.approx(expected.sqrt(), rel=1e-3)


def test_fitting_does_not_depend_on_how_the_good_features_are_batched():
    good = _good()
    whole = fit_position_gaussian([good])
    batched = fit_position_gaussian(good.split(3))
    assert torch.allclose(whole.mean, batched.mean, atol=1e-3)
    assert torch.allclose(whole.precision_root, batched.precision_root, rtol=1e-3, atol=1e-4)


def test_an_unusual_patch_lights_up_its_own_position_only():
    good = _good()
    gaussian = fit_position_gaussian([good])
    query = good[:1].clone()
    query[0, :, 1, 2] += 50
    grid = gaussian.distances(query, (4, 5))[0]
    assert grid.argmax() == 1 * 5 + 2
    assert grid[1, 2] > 5 * grid.flatten().sort().values[-2]


def test_the_gaussian_feature_model_searches_no_bank_and_rejects_another_grid():
    reference = search_for([_good()], ScoreSettings(feature_model="gaussian"))
    assert isinstance(reference, PositionGaussian)
    assert reference.distances(_good(2), (8, 10)).shape == (2, 8, 10)
    with pytest.raises(ValueError, match="grid"):
        reference.distances(_good(1, grid=(4, 4)), (4, 4))


def test_fitting_needs_two_good_images():
    with pytest.raises(ValueError, match="at least two"):
        fit_position_gaussian([_good(1)])
