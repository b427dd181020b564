"""The anomaly map is the seed's recipe, checked against a plain scipy reference."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve1d

from ddad.maps.kinds.reconstruction_error import anomaly_map
from ddad.maps.scoring import (
    SPOT_LENGTH,
    ScoreSettings,
    closed,
    finished,
    gaussian_kernel,
    image_score,
    spot_map,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _taps(sigma: float, size: int) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _reference(image, recons, sigma, size, error="squared", mode="mirror"):
    """Error per pixel, blurred per channel (torch 'reflect' is scipy 'mirror'), channel sum,
    ensemble mean."""
    diff = recons - image[None]
    per_pixel = diff**2 if error == "squared" else np.abs(diff)
    if sigma > 0:
        taps = _taps(sigma, size)
        per_pixel = convolve1d(per_pixel, taps, axis=-1, mode=mode)
        per_pixel = convolve1d(per_pixel, taps, axis=-2, mode=mode)
    return per_pixel.sum(axis=1).mean(axis=0)


def _pair(shape, members=3, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, shape)
    return image, rng.uniform(-1, 1, (members, *shape))


def _map(image, recons, **options) -> np.ndarray:
    return anomaly_map(torch.from_numpy(image), torch.from_numpy(recons), **options).numpy()


@pytest.mark.parametrize("shape", [(3, 20, 13), (1, 9, 31)])
@pytest.mark.parametrize("error", ["squared", "absolute"])
def test_map_matches_reference(shape, error):
    image, recons = _pair(shape)
    expected = _reference(image, recons, 1.4, 7, error)
    np.testing.assert_allclose(
        _map(image, recons, sigma=1.4, kernel_size=7, error=error), expected, rtol=1e-12
    )


def test_kernel_size_0_picks_2_ceil_3_sigma_plus_1_taps():
    assert len(gaussian_kernel(1.4, 0)) == 11
    image, recons = _pair((2, 24, 24))
    expected = _reference(image, recons, 1.4, 11)
    np.testing.assert_allclose(_map(image, recons, sigma=1.4, kernel_size=0), expected, rtol=1e-12)


def test_map_smaller_than_the_kernel_repeats_edge_pixels():
    image, recons = _pair((1, 3, 8))
    expected = _reference(image, recons, 1.4, 7, mode="nearest")
    np.testing.assert_allclose(_map(image, recons, sigma=1.4, kernel_size=7), expected, rtol=1e-12)


def test_sigma_0_is_no_blur():
    image, recons = _pair((3, 5, 6))
    expected = ((recons - image[None]) ** 2).sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(_map(image, recons, sigma=0, kernel_size=7), expected, rtol=1e-12)


def test_perfect_reconstruction_gives_a_zero_map():
    image, _ = _pair((3, 10, 10))
    assert not _map(image, np.stack([image, image])).any()


def test_even_kernel_size_is_refused():
    image, recons = _pair((1, 12, 12))
    with pytest.raises(ValueError, match="kernel size must be 0 or odd, not 6"):
        _map(image, recons, sigma=1.0, kernel_size=6)


def test_image_score_max_and_top_fraction():
    amap = np.arange(100, dtype=float).reshape(10, 10)
    assert image_score(amap, "max", 0.01) == 99.0
    assert image_score(amap, "topk_mean", 0.05) == pytest.approx(np.mean([95, 96, 97, 98, 99]))
    assert image_score(amap, "topk_mean", 0.0) == 99.0
    assert image_score(amap, "topk_mean", 1.0) == pytest.approx(49.5)


def test_spot_map_keeps_a_spot_and_drops_a_diagonal_streak():
    amap = np.ones((40, 40))
    amap[np.arange(5, 35), np.arange(5, 35)] += 4.0  # a streak 30 pixels long
    amap[30, 8] += 3.0  # a spot
    spots = spot_map(amap, SPOT_LENGTH)
    assert spots[30, 8] == pytest.approx(3.0)
    assert spots[20, 20] == pytest.approx(0.0)
    assert (spots >= 0).all() and (spots <= amap).all()
    assert image_score(amap, "spots", 0.0) == pytest.approx(3.0)
    assert image_score(amap, "topk_mean", 0.0) == pytest.approx(5.0)


def test_spot_map_stays_non_negative_where_a_line_outgrows_the_map():
    small = np.array([[0.0, 1.0], [1.0, 1.0]])  # mirrored borders: an opening exceeded it
    assert (spot_map(small, SPOT_LENGTH) == 0).all()


def test_closing_fills_a_rings_inside_and_leaves_a_lone_spot():
    amap = np.zeros((40, 40))
    amap[5:16, 5:16] = 2.0
    amap[7:14, 7:14] = 0.0  # a lit rim, 2 pixels wide, around a dark inside 7 pixels across
    amap[30, 30] = 3.0
    filled = closed(amap, 4)
    assert (filled[5:16, 5:16] == 2.0).all()
    assert filled[30, 30] == 3.0 and filled[30, 25] == 0.0
    assert (filled >= amap).all()
    assert closed(amap, 0) is amap


def test_finished_scores_the_closed_map():
    amap = np.zeros((20, 20))
    amap[4:9, 4:9] = 1.0
    amap[6, 6] = 0.0  # a hole inside the high square
    final, score = finished(
        amap, ScoreSettings(image_score="topk_mean", top_fraction=0.0625, closing=1)
    )
    assert final[6, 6] == 1.0
    assert score == pytest.approx(1.0)  # the top 25 pixels, all of the filled square


def test_finished_scores_the_map_over_the_typical_map_and_can_report_it_over_its_mean():
    distances = np.array([[4.0, 2.0], [1.0, 1.0]])  # the corner is far in good images too
    typical = np.array([[4.0, 1.0], [1.0, 2.0]])
    settings = ScoreSettings(image_score="max")
    final, score = finished(distances, settings, typical)
    np.testing.assert_allclose(final, distances / typical)
    assert score == 2.0
    kept, same = finished(distances, replace(settings, divide_map=False), typical)
    np.testing.assert_allclose(kept, distances / 2.0)  # over the typical map's mean
    assert same == score
