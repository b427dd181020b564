"""The metrics agree with plain brute-force definitions, including ties and the FPR cut-off."""

import math
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from ddad.evaluation.metrics import (
    aupro,
    f1_max,
    image_auroc,
    lit_share,
    pixel_ap,
    pixel_auroc,
    roc_points,
    summary,
)

SEEDS = range(25)


def pairwise_auroc(labels, scores):
    """Share of (anomalous, normal) pairs ordered correctly, ties counting 1/2."""
    anomalous = [s for label, s in zip(labels, scores, strict=True) if label]
    normal = [s for label, s in zip(labels, scores, strict=True) if not label]
    wins = sum((a > n) + 0.5 * (a == n) for a in anomalous for n in normal)
    return wins / (len(anomalous) * len(normal))


def brute_f1(labels, scores):
    """Best F1 by trying every distinct score as the threshold."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores)
    best = -1.0
    for threshold in set(scores.tolist()):
        called = scores >= threshold
        true_pos = np.sum(called & labels)
        best = max(best, 2 * true_pos / (np.sum(called) + np.sum(labels)))
    return best


def brute_aupro(masks, maps, fpr_limit):
    """AUPRO by looping over every distinct threshold and every region."""
    regions, normal = [], []
    for mask, score_map in zip(masks, maps, strict=True):
        mask = np.asarray(mask, bool)
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [score_map[labelled == region] for region in range(1, count + 1)]
        normal.append(score_map[~mask])
    normal = np.concatenate(normal)
    all_scores = np.concatenate([normal, *regions])
    points = [(0.0, 0.0)]
    for threshold in sorted(set(all_scores.tolist()), reverse=True):
        fpr = np.mean(normal >= threshold)
        pro = np.mean([np.mean(region >= threshold) for region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            x1, y1 = fpr_limit, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def random_images(seed, rounded):
    """A few images of differing sizes with several rectangular defects and noisy scores."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for _ in range(3):
        height, width = rng.integers(6, 14, size=2)
        mask = np.zeros((height, width), bool)
        for _ in range(rng.integers(0, 4)):
            top, left = rng.integers(0, height - 1), rng.integers(0, width - 1)
            mask[top : top + rng.integers(1, 4), left : left + rng.integers(1, 4)] = True
        score_map = rng.random((height, width)) + 0.6 * mask * rng.random()
        maps.append(np.round(score_map, 1) if rounded else score_map.astype(np.float32))
        masks.append(mask)
    if not any(mask.any() for mask in masks):
        masks[0][0, 0] = True
    return masks, maps


@pytest.mark.parametrize("seed", SEEDS)
def test_image_auroc_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(40) + 0.3 * labels, 1)  # rounding makes ties across classes
    assert image_auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rounded", [True, False])
def test_pixel_metrics_match_brute_force(seed, rounded):
    masks, maps = random_images(seed, rounded)
    labels = np.concatenate([mask.ravel() for mask in masks])
    scores = np.concatenate([score_map.ravel() for score_map in maps]).astype(np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    float32_maps = [score_map.astype(np.float32) for score_map in maps]
    for fpr_limit in (0.05, 0.3, 1.0):
        expected = brute_aupro(masks, float32_maps, fpr_limit)
        assert aupro(masks, maps, fpr_limit) == pytest.approx(expected, abs=1e-9)
        assert 0.0 <= aupro(masks, maps, fpr_limit) <= 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_max_matches_trying_every_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 30)
    labels[0] = 1
    scores = np.round(rng.random(30) + 0.2 * labels, 1)
    expected_f1 = brute_f1(labels, scores)
    assert f1_max(labels, scores) == pytest.approx(expected_f1, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_lit_share_counts_defect_free_pixels_above_the_threshold(seed):
    masks, maps = random_images(seed, rounded=True)  # rounded: pixels tie with the threshold
    free = np.concatenate([m[~mask] for mask, m in zip(masks, maps, strict=True)])
    expected = np.mean(free.astype(np.float32) > np.float32(0.8))
    assert lit_share(masks, maps, 0.8) == pytest.approx(expected, abs=1e-12)


def test_lit_share_is_strictly_above_and_ignores_defect_pixels():
    mask = np.array([[0, 1], [0, 0]])
    score_map = np.array([[0.5, 9.0], [0.7, 0.2]])
    assert lit_share([mask], [score_map], 0.5) == pytest.approx(1 / 3)  # only 0.7 of 0.5, 0.7, 0.2
    assert lit_share([mask], [score_map], 0.7) == 0.0
    wide = np.zeros((1, 5))
    assert lit_share([mask, wide], [score_map, wide + 1.0], 0.5) == pytest.approx(6 / 8)


def test_lit_share_is_nan_without_defect_free_pixels_or_a_threshold():
    assert math.isnan(lit_share(np.ones((2, 3, 3)), np.zeros((2, 3, 3)), 0.5))
    assert math.isnan(lit_share(np.zeros((1, 3, 3)), np.ones((1, 3, 3)), float("nan")))


def test_summary_splits_the_lit_share_by_image_label():
    masks = np.zeros((3, 2, 2), bool)
    masks[1, 0, 0] = True
    maps = np.array([np.full((2, 2), 0.4), [[9.0, 0.6], [0.1, 0.1]], np.full((2, 2), 0.6)])
    found = summary([0, 1, 0], [0.1, 0.9, 0.5], masks, maps, ["lit_defective", "lit_good"], 0.5)
    assert found == {"lit_defective": pytest.approx(1 / 3), "lit_good": 0.5}
    good_only = summary([0, 0], [0.1, 0.2], masks[[0, 2]], maps[[0, 2]], threshold=0.5)
    assert math.isnan(good_only["lit_defective"]) and good_only["lit_good"] == 0.5
    assert math.isnan(summary([0, 1, 0], [0.1, 0.9, 0.5], masks, maps)["lit_good"])


def test_an_image_without_ground_truth_counts_for_the_image_figures_alone():
    """A defective image without a mask (None) ranks among the image scores and is left out of
    every pixel figure; with no ground truth left, the pixel figures are NaN, not an error."""
    rng = np.random.default_rng(7)
    masks = rng.random((4, 6, 6)) > 0.7
    masks[[0, 3]] = False  # the good ones
    maps = rng.random((4, 6, 6))
    labels, scores = [0, 1, 1, 0], [0.1, 0.9, 0.3, 0.4]
    alone = summary(labels, scores, masks, maps, threshold=0.5)
    found = summary([*labels, 1], [*scores, 0.2], [*masks, None], [*maps, maps[1]], threshold=0.5)
    assert found["img_auc"] == image_auroc([*labels, 1], [*scores, 0.2]) == 4 / 6
    assert found["img_f1max"] == f1_max([*labels, 1], [*scores, 0.2])
    assert found["miss_rate"] == 2 / 3  # the unmasked 0.2 is missed at 0.5, as is 0.3
    image_figures = ("img_auc", "img_f1max", "miss_rate")
    assert {k: v for k, v in found.items() if k not in image_figures} == {
        k: v for k, v in alone.items() if k not in image_figures
    }
    rejects = summary([0, 1, 1], [0.1, 0.9, 0.8], [masks[0], None, None], maps[:3], threshold=0.5)
    assert rejects["img_auc"] == 1.0 and rejects["lit_good"] == lit_share(masks[:1], maps[:1], 0.5)
    assert all(math.isnan(rejects[k]) for k in ("pixel_auc", "aupro", "pixel_ap", "lit_defective"))
    unknown = summary([1, 1], [0.1, 0.9], [None, None], maps[:2], threshold=0.5)
    assert [k for k, v in unknown.items() if not math.isnan(v)] == ["img_f1max", "miss_rate"]


def test_verdict_rates_count_the_images_the_threshold_calls_wrongly():
    """Good images strictly above the threshold are false alarms, defective ones at or below it
    are missed, as ``ddad detect`` decides; without a threshold or such images, NaN."""
    labels, scores = [0, 0, 0, 0, 1, 1, 1], [0.1, 0.5, 0.6, 0.2, 0.5, 0.7, 0.9]
    maps = np.zeros((7, 2, 2))
    names = ["false_alarm_rate", "miss_rate"]
    found = summary(labels, scores, np.zeros((7, 2, 2), bool), maps, names, threshold=0.5)
    assert found == {"false_alarm_rate": 1 / 4, "miss_rate": 1 / 3}
    unset = summary(labels, scores, np.zeros((7, 2, 2), bool), maps, names)
    assert all(math.isnan(v) for v in unset.values())
    defects_only = summary([1, 1], [0.1, 0.9], np.zeros((2, 2, 2), bool), maps[:2], names, 0.5)
    assert math.isnan(defects_only["false_alarm_rate"]) and defects_only["miss_rate"] == 0.5


def test_stacked_array_and_list_give_the_same_pixel_metrics():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 8, 8)) > 0.8
    maps = rng.random((4, 8, 8))
    as_lists = (list(masks.astype(np.uint8)), list(maps))
    assert pixel_auroc(masks, maps) == pixel_auroc(*as_lists)
    assert aupro(masks, maps) == aupro(*as_lists)
    assert pixel_ap(masks, maps) == pixel_ap(*as_lists)


def test_perfect_and_inverted_scores_give_one_and_zero():
    labels = np.array([0, 0, 1, 1, 0])
    assert image_auroc(labels, labels * 2.0) == 1.0
    assert image_auroc(labels, -labels) == 0.0
    assert f1_max(labels, labels * 2.0) == 1.0
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 1:3, 1:3] = masks[1, 4:, 4:] = masks[1, 0, 5] = True
    for metric in (pixel_auroc, aupro, pixel_ap):
        assert metric(masks, masks * 1.0) == pytest.approx(1.0, abs=1e-12)
    assert pixel_auroc(masks, -1.0 * masks) == 0.0
    assert aupro(masks, -1.0 * masks) == 0.0


def test_single_class_gives_nan():
    assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(image_auroc([1, 1], [0.1, 0.2]))
    assert math.isnan(f1_max([0, 0], [0.1, 0.2]))
    assert roc_points([1, 1], [0.1, 0.2])[0].size == 0
    normal_only = np.zeros((2, 4, 4), bool)
    scores = np.random.default_rng(0).random((2, 4, 4))
    for metric in (pixel_auroc, aupro, pixel_ap):
        assert math.isnan(metric(normal_only, scores))
    assert math.isnan(aupro(~normal_only, scores))


def test_all_scores_tied_cross_the_threshold_together():
    masks = np.zeros((2, 5, 5), bool)
    masks[0, :2, :2] = masks[1, 3:, 3:] = True
    flat = np.full((2, 5, 5), 0.5)
    assert pixel_auroc(masks, flat) == 0.5
    # One threshold takes the curve straight from (0, 0) to (1, 1): area 0.3**2 / 2 over 0.3.
    assert aupro(masks, flat, fpr_limit=0.3) == pytest.approx(0.15, abs=1e-12)
    assert image_auroc([0, 1, 0, 1], [1.0, 1.0, 1.0, 1.0]) == 0.5


def test_fpr_limit_between_two_curve_points_interpolates():
    # Curve points: (0, 0), (0.2, 0), (0.2, 0.5), (0.6, 1), (1, 1); the limit 0.3 cuts the
    # diagonal from (0.2, 0.5) to (0.6, 1), where PRO is 0.625.
    mask = np.array([[0, 0, 0, 0, 0, 1, 1]])
    score_map = np.array([[0.9, 0.6, 0.6, 0.1, 0.1, 0.8, 0.6]])
    assert aupro([mask], [score_map], fpr_limit=0.3) == pytest.approx(0.1 * (0.5 + 0.625) / 2 / 0.3)
    assert aupro([mask], [score_map], fpr_limit=0.2) == 0.0
    assert aupro([mask], [score_map], fpr_limit=0.6) == pytest.approx(0.5)


def test_regions_are_eight_connected():
    # Two horizontal pixels plus one diagonal neighbour form one region of three pixels; only
    # the diagonal one is detected, so PRO is 1/3 (it would be 1/2 with 4-connectivity).
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[0, 1] = mask[1, 2] = True
    score_map = np.where(mask, 0.0, 0.5)
    score_map[1, 2] = 1.0
    assert aupro([mask], [score_map]) == pytest.approx(1 / 3)


def test_roc_points_keep_endpoints_and_area_under_the_cap():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000)
    scores = rng.random(2000) + labels
    fpr, tpr = roc_points(labels, scores, max_points=50)
    assert fpr.size <= 50 and fpr.size == tpr.size
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    full_fpr, full_tpr = roc_points(labels, scores, max_points=10**6)
    area = np.sum(np.diff(full_fpr) * (full_tpr[1:] + full_tpr[:-1]) / 2)
    assert area == pytest.approx(image_auroc(labels, scores), abs=1e-12)


def test_pixel_metrics_need_about_four_bytes_per_pixel():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 64, 64)) > 0.99
    maps = rng.random((40, 64, 64), dtype=np.float32)
    tracemalloc.start()
    pixel_auroc(masks, maps)
    aupro(masks, maps)
    pixel_ap(masks, maps)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 6 * masks.size


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: image_auroc([0, 1, 1], [0.1, 0.2]), "labels has 3 entries but scores has 2"),
        (lambda: image_auroc([0, 1], [0.1, np.nan]), "scores contains 1 NaN value(s)"),
        (lambda: f1_max([0, 1], [np.inf, 0.2]), "scores contains 1 infinite value(s)"),
        (lambda: image_auroc([0, 2], [0.1, 0.2]), "labels must contain only 0 and 1"),
        (lambda: image_auroc([], []), "empty"),
        (
            lambda: pixel_auroc([np.zeros((4, 4))], [np.zeros((4, 5))]),
            "masks[0] has shape (4, 4) but maps[0] has shape (4, 5)",
        ),
        (
            lambda: aupro(np.zeros((2, 3, 3)), np.zeros((3, 3, 3))),
            "masks has 2 images but maps has 3",
        ),
        (lambda: pixel_ap(np.zeros((3, 3)), np.zeros((3, 3))), "must be an (N, H, W) array"),
        (lambda: pixel_auroc([np.full((2, 2), 255)], [np.zeros((2, 2))]), "contains 255"),
        (
            lambda: aupro([np.eye(3)], [np.where(np.eye(3), np.nan, 0.0)]),
            "maps[0] contains 3 NaN value(s), the first at index (0, 0)",
        ),
        (lambda: aupro([np.eye(3)], [np.eye(3)], fpr_limit=0.0), "fpr_limit must lie in (0, 1]"),
        (lambda: roc_points([0, 1], [0.1, 0.2], max_points=1), "max_points must be at least 2"),
        (
            lambda: lit_share([np.zeros((2, 2))], [np.zeros((2, 3))], 0.5),
            "masks[0] has shape (2, 2) but maps[0] has shape (2, 3)",
        ),
        (
            lambda: summary([0, 1], [0.1, 0.2], np.zeros((3, 2, 2)), np.zeros((3, 2, 2))),
            "labels has shape (2,) but masks has 3 images",
        ),
    ],
)
def test_invalid_input_raises_value_error_naming_the_problem(call, fragment):
    with pytest.raises(ValueError) as raised:
        call()
    assert fragment in str(raised.value)
