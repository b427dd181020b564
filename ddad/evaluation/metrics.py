"""Anomaly detection metrics: image AUROC, pixel AUROC, AUPRO, F1, average precision, the
share of defect-free pixels a map lights above the detect threshold, and that threshold's
false-alarm and miss rates.

Every metric is computed exactly from sorted scores rather than on a threshold grid, so tied
scores cross a threshold together and no resolution is lost. Conventions throughout: label or
mask value 1 means anomalous, a higher score means more anomalous, and a sample is called
anomalous at threshold ``t`` when ``score >= t``.

Pixel metrics pool all pixels of all images as float32. They keep one sorted copy of the normal
pixels' scores plus tallies for the (usually few) anomalous pixels: about 4 bytes per pixel and
100 per anomalous pixel, so the 1,725 maps of 256x256 of MVTec AD need well under a gigabyte.

Invalid input raises ``ValueError`` (shape mismatches, non-binary labels, NaN or infinite
scores); a metric that is undefined for valid input (only one class present) returns NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

ImageStack = np.ndarray | Sequence[ArrayLike]

METRIC_NAMES = (
    "img_auc",
    "pixel_auc",
    "aupro",
    "img_f1max",
    "pixel_ap",
    "lit_defective",
    "lit_good",
    "false_alarm_rate",
    "miss_rate",
)
# the figures a defective image's mask decides: empty where no defective image has one
DEFECT_PIXEL_METRICS = ("pixel_auc", "aupro", "pixel_ap", "lit_defective")


@dataclass(frozen=True)
class _Steps:
    """Counts at each distinct anomalous score, highest first: the only places where curves bend.

    ``anomalous_weight`` is the number of anomalous samples with exactly that score (or their
    summed weight); ``normal_at_or_above`` and ``normal_above`` count normal samples scoring
    ``>=`` and ``>`` it.
    """

    thresholds: np.ndarray
    anomalous_weight: np.ndarray
    normal_at_or_above: np.ndarray
    normal_above: np.ndarray
    n_normal: int


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of image scores; ties between classes count 1/2.

    Equals the probability that a random anomalous image scores higher than a random normal one.
    Returns NaN when only one class is present, since the curve is then undefined. Raises
    ValueError for labels other than 0/1, NaN or infinite scores, empty or mismatched inputs.
    """
    normal, anomalous = _checked_by_class(labels, scores)
    return _auroc(normal, anomalous)


def pixel_auroc(masks: ImageStack, maps: ImageStack) -> float:
    """AUROC over all pixels of all images pooled together (as float32).

    ``masks`` is a boolean or 0/1 (N, H, W) array or a list of (H, W) arrays of possibly
    differing sizes; ``maps`` holds a score map of the same shape for each mask (scores that only
    differ beyond float32 precision tie). Returns NaN when no pixel (or every pixel) is anomalous.
    Raises ValueError for mismatched shapes, non-binary masks and NaN or infinite scores.
    """
    normal, anomalous = _pooled_by_class(*_checked_images(masks, maps))
    return _auroc(normal, anomalous)


def aupro(masks: ImageStack, maps: ImageStack, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit``, as in MVTec AD.

    Regions are the 8-connected components of every ground-truth mask. For each threshold, PRO is
    the mean over all regions of the fraction of the region's pixels at or above it, and FPR is
    the fraction of all normal pixels (of all images) at or above it. The curve starts at (0, 0),
    has a point at every distinct score, is integrated with the trapezoid rule up to
    ``fpr_limit`` (interpolated linearly at exactly that FPR) and divided by ``fpr_limit``, so the
    result lies in [0, 1]. Returns NaN when there is no anomalous region or no normal pixel.
    Input rules are those of ``pixel_auroc``; ``fpr_limit`` must lie in (0, 1].
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must lie in (0, 1]; got {fpr_limit}")
    bool_masks, score_maps = _checked_images(masks, maps)
    weights, n_regions = _region_weights(bool_masks)
    normal, anomalous = _pooled_by_class(bool_masks, score_maps)
    if n_regions == 0 or normal.size == 0:
        return float("nan")
    fpr, pro = _bend_points(_steps(normal, anomalous, weights))
    area = _area_up_to(fpr, pro, fpr_limit) / fpr_limit
    return float(np.clip(area, 0.0, 1.0))  # clip only absorbs rounding of the region weights


def f1_max(labels: ArrayLike, scores: ArrayLike) -> float:
    """Best F1 score over all thresholds of the precision-recall curve.

    Returns NaN when no sample is anomalous (F1 is then undefined); with no normal sample it is
    1. Input rules are those of ``image_auroc``.
    """
    _, f1 = _f1_by_threshold(*_checked_by_class(labels, scores))
    return float(f1.max()) if f1.size else float("nan")


def pixel_ap(masks: ImageStack, maps: ImageStack) -> float:
    """Average precision over all pixels pooled (as float32), the sum of precision x recall gain.

    Agrees with scikit-learn's ``average_precision_score`` on the flattened pixels. Returns NaN
    when no pixel is anomalous. Input rules are those of ``pixel_auroc``.
    """
    normal, anomalous = _pooled_by_class(*_checked_images(masks, maps))
    if anomalous.size == 0:
        return float("nan")
    steps = _steps(normal, anomalous)
    true_positives = np.cumsum(steps.anomalous_weight)
    precision = true_positives / (true_positives + steps.normal_at_or_above)
    return float(np.sum(steps.anomalous_weight * precision) / anomalous.size)


def lit_share(masks: ImageStack, maps: ImageStack, threshold: float) -> float:
    """Share of the defect-free pixels (mask 0) of all images pooled whose score lies strictly
    above ``threshold`` (a defect only above it, as ``ddad.maps.threshold.is_defect`` says).

    With the detect threshold, an image-score threshold in the maps' units, it says whether a
    map points at the defect or lights up the whole image, which the ranking metrics above do
    not see. Scores are compared as float32, like the other pixel metrics. Returns NaN when no
    pixel is defect-free or the threshold is NaN (none was learned). Input rules are those of
    ``pixel_auroc``.
    """
    bool_masks, score_maps = _checked_images(masks, maps)
    limit = np.float32(threshold)
    lit = free = 0
    for index, (mask, score_map) in enumerate(zip(bool_masks, score_maps, strict=True)):
        scores = _finite(np.asarray(score_map, dtype=np.float32), f"maps[{index}]")[~mask]
        lit += int(np.count_nonzero(scores > limit))
        free += scores.size
    if free == 0 or math.isnan(threshold):
        return float("nan")
    return lit / free


def wrong_share(labels: ArrayLike, scores: ArrayLike, threshold: float, label: int) -> float:
    """Share of the images labelled ``label`` that the detect threshold calls wrongly: good ones
    above it (``label`` 0, the false-alarm rate) or defective ones at or below it (1, the miss
    rate), as ``ddad.maps.threshold.is_defect`` decides. NaN without such images or threshold."""
    normal, anomalous = _checked_by_class(labels, scores)
    chosen = anomalous if label else normal
    if chosen.size == 0 or math.isnan(threshold):
        return float("nan")
    flagged = np.count_nonzero(chosen > threshold)
    return float((chosen.size - flagged if label else flagged) / chosen.size)


def summary(
    labels: ArrayLike,
    scores: ArrayLike,
    masks: ImageStack | Sequence[ArrayLike | None],
    maps: ImageStack,
    names: Sequence[str] = METRIC_NAMES,
    threshold: float = math.nan,
) -> dict[str, float]:
    """The named metrics (``METRIC_NAMES``) of one set of test images, in the order asked.

    The one place a detector's scores and maps become figures, so the pipeline's evaluate stage
    and ``ddad baseline`` report comparable numbers. ``lit_defective`` and ``lit_good`` are
    ``lit_share`` at ``threshold`` (the detect threshold; NaN, the default, when none is known)
    over the defective and the good images alone, NaN when there are none; ``false_alarm_rate``
    and ``miss_rate`` are ``wrong_share`` at it. A mask of None is an
    image whose ground truth is unknown (a defective image without a mask): the image metrics
    count it, the pixel metrics and lit shares leave it out, NaN when no image is left. Pixel
    metrics are skipped when not asked for (they are the slow ones); unknown names raise
    ValueError.
    """
    known_labels, known_masks, known_maps = _with_truth(labels, masks, maps)
    no_truth = len(known_masks) == 0 < len(masks)

    def pixels(metric: Callable[[], float]) -> Callable[[], float]:
        return (lambda: float("nan")) if no_truth else metric

    compute = {
        "img_auc": lambda: image_auroc(labels, scores),
        "pixel_auc": pixels(lambda: pixel_auroc(known_masks, known_maps)),
        "aupro": pixels(lambda: aupro(known_masks, known_maps)),
        "img_f1max": lambda: f1_max(labels, scores),
        "pixel_ap": pixels(lambda: pixel_ap(known_masks, known_maps)),
        "lit_defective": pixels(
            lambda: _lit_share_of(1, known_labels, known_masks, known_maps, threshold)
        ),
        "lit_good": pixels(
            lambda: _lit_share_of(0, known_labels, known_masks, known_maps, threshold)
        ),
        "false_alarm_rate": lambda: wrong_share(labels, scores, threshold, 0),
        "miss_rate": lambda: wrong_share(labels, scores, threshold, 1),
    }
    unknown = [name for name in names if name not in compute]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRIC_NAMES)}")
    return {name: compute[name]() for name in names}


def auroc_standard_error(auroc: float, n_anomalous: int, n_normal: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUROC measured on ``n_anomalous`` and
    ``n_normal`` samples: how far the same detector's AUROC would typically move on another
    test set of that size. On 40 good and 40 defective images an AUROC of 0.90 has a standard
    error of about 0.034, so smaller differences between two settings are not evidence.
    Returns NaN when the AUROC is NaN or either count is zero.
    """
    if math.isnan(auroc) or n_anomalous <= 0 or n_normal <= 0:
        return float("nan")
    q1 = auroc / (2 - auroc)
    q2 = 2 * auroc**2 / (1 + auroc)
    variance = (
        auroc * (1 - auroc) + (n_anomalous - 1) * (q1 - auroc**2) + (n_normal - 1) * (q2 - auroc**2)
    ) / (n_anomalous * n_normal)
    return math.sqrt(max(variance, 0.0))


def roc_points(
    labels: ArrayLike, scores: ArrayLike, max_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` for plotting, thinned to at most ``max_points`` points.

    The exact curve (one corner per distinct score, collinear repeats dropped) runs from (0, 0)
    to (1, 1); when it has more than ``max_points`` points, evenly spaced ones are kept,
    always including both endpoints. With only one class present there is no curve and two
    empty arrays are returned. Input rules are those of ``image_auroc``; ``max_points`` must be
    at least 2.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 to keep both endpoints; got {max_points}")
    normal, anomalous = _checked_by_class(labels, scores)
    if normal.size == 0 or anomalous.size == 0:
        return np.empty(0), np.empty(0)
    fpr, tpr = _bend_points(_steps(normal, anomalous))
    moves = np.concatenate(([True], (np.diff(fpr) != 0) | (np.diff(tpr) != 0)))
    fpr, tpr = fpr[moves], tpr[moves]
    if fpr.size > max_points:
        kept = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr = fpr[kept], tpr[kept]
    return fpr, tpr


def _with_truth(
    labels: ArrayLike, masks: ImageStack | Sequence[ArrayLike | None], maps: ImageStack
) -> tuple[ArrayLike, ImageStack, ImageStack]:
    """The labels, masks and maps of the images whose mask is not None (all of a stack)."""
    if isinstance(masks, np.ndarray) or all(mask is not None for mask in masks):
        return labels, masks, maps
    if not len(masks) == len(maps) == np.size(labels):
        raise ValueError(
            f"labels, masks and maps hold {np.size(labels)}, {len(masks)} and {len(maps)} "
            "images; pass one label, mask (or None) and map per image"
        )
    known = [index for index, mask in enumerate(masks) if mask is not None]
    return np.asarray(labels)[known], [masks[i] for i in known], [maps[i] for i in known]


def _lit_share_of(
    label: int, labels: ArrayLike, masks: ImageStack, maps: ImageStack, threshold: float
) -> float:
    """``lit_share`` over the images labelled ``label`` alone; NaN when no image is."""
    bool_masks, score_maps = _checked_images(masks, maps)
    is_anomalous = _binary(np.asarray(labels), "labels")
    if is_anomalous.shape != (len(bool_masks),):
        raise ValueError(
            f"labels has shape {is_anomalous.shape} but masks has {len(bool_masks)} images; "
            "pass one label per ground-truth mask"
        )
    chosen = np.flatnonzero(is_anomalous == label)
    if not chosen.size:
        return float("nan")
    return lit_share([bool_masks[i] for i in chosen], [score_maps[i] for i in chosen], threshold)


def _auroc(normal_sorted: np.ndarray, anomalous: np.ndarray) -> float:
    """Mann-Whitney AUROC from exact integer counts of wins and ties."""
    if normal_sorted.size == 0 or anomalous.size == 0:
        return float("nan")
    steps = _steps(normal_sorted, anomalous)
    below = steps.n_normal - steps.normal_at_or_above
    tied = steps.normal_at_or_above - steps.normal_above
    doubled_wins = np.sum(steps.anomalous_weight * (2 * below + tied))
    return float(doubled_wins / (2 * anomalous.size * steps.n_normal))


def _f1_by_threshold(
    normal_sorted: np.ndarray, anomalous: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """F1 at each distinct anomalous score; other thresholds only add false alarms."""
    if anomalous.size == 0:
        return np.empty(0), np.empty(0)
    steps = _steps(normal_sorted, anomalous)
    true_positives = np.cumsum(steps.anomalous_weight)
    f1 = 2 * true_positives / (true_positives + steps.normal_at_or_above + anomalous.size)
    return steps.thresholds, f1


def _steps(
    normal_sorted: np.ndarray, anomalous: np.ndarray, weights: np.ndarray | None = None
) -> _Steps:
    """Tally, for each distinct anomalous score, its weight and the normal scores around it.

    Works on a sorted copy of the anomalous scores instead of ``np.unique`` to keep the extra
    memory to a few bytes per anomalous sample.
    """
    if weights is None:
        ordered = np.sort(anomalous)
    else:
        order = np.argsort(anomalous, kind="stable")
        ordered, weights = anomalous[order], weights[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    values = ordered[starts]
    if weights is None:
        weight = np.diff(starts, append=ordered.size)
    else:
        weight = np.add.reduceat(weights, starts)
    n_normal = normal_sorted.size
    at_or_above = n_normal - np.searchsorted(normal_sorted, values, side="left")
    above = n_normal - np.searchsorted(normal_sorted, values, side="right")
    return _Steps(values[::-1], weight[::-1], at_or_above[::-1], above[::-1], n_normal)


def _bend_points(steps: _Steps) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the (FPR, share of anomalous weight) curve, from (0, 0) to (1, 1).

    Between two distinct anomalous scores only normal samples cross, so the curve runs
    horizontally there; at an anomalous score it jumps, diagonally when normal samples tie with
    it. Two corners per anomalous score therefore describe the whole curve.
    """
    cumulative = np.cumsum(steps.anomalous_weight)
    share_at = cumulative / cumulative[-1]
    share_before = np.concatenate(([0.0], share_at[:-1]))
    fpr = np.empty(2 * share_at.size + 2)
    share = np.empty_like(fpr)
    fpr[0], share[0], fpr[-1], share[-1] = 0.0, 0.0, 1.0, 1.0
    fpr[1:-1:2], share[1:-1:2] = steps.normal_above / steps.n_normal, share_before
    fpr[2:-1:2], share[2:-1:2] = steps.normal_at_or_above / steps.n_normal, share_at
    return fpr, share


def _area_up_to(x: np.ndarray, y: np.ndarray, x_limit: float) -> float:
    """Trapezoid area under a curve with non-decreasing x ending at 1, from 0 to ``x_limit``."""
    end = int(np.searchsorted(x, x_limit, side="right"))
    xs, ys = x[:end], y[:end]
    if xs[-1] < x_limit:
        x0, x1, y0, y1 = x[end - 1], x[end], y[end - 1], y[end]
        xs = np.append(xs, x_limit)
        ys = np.append(ys, y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))


def _region_weights(masks: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """1 / region size for every anomalous pixel (row-major, image by image), and region count.

    Summing these weights over the pixels above a threshold gives the summed per-region overlap.
    """
    chunks = [np.empty(0)]
    n_regions = 0
    for mask in masks:
        regions, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        region_of_pixel = regions[mask]
        chunks.append(1.0 / np.bincount(region_of_pixel)[region_of_pixel])
        n_regions += count
    return np.concatenate(chunks), n_regions


def _pooled_by_class(
    masks: list[np.ndarray], maps: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """All normal pixel scores sorted and all anomalous ones, as float32, filled in place."""
    anomalous_counts = [int(np.count_nonzero(mask)) for mask in masks]
    n_anomalous = sum(anomalous_counts)
    normal = np.empty(sum(mask.size for mask in masks) - n_anomalous, dtype=np.float32)
    anomalous = np.empty(n_anomalous, dtype=np.float32)
    normal_end = anomalous_end = 0
    for index, (mask, score_map, count) in enumerate(
        zip(masks, maps, anomalous_counts, strict=True)
    ):
        scores = _finite(np.asarray(score_map, dtype=np.float32), f"maps[{index}]")
        anomalous[anomalous_end : anomalous_end + count] = scores[mask]
        normal[normal_end : normal_end + mask.size - count] = scores[~mask]
        anomalous_end += count
        normal_end += mask.size - count
    normal.sort()
    return normal, anomalous


def _checked_images(
    masks: ImageStack, maps: ImageStack
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Boolean masks and untouched score maps, after checking they pair up image by image."""
    mask_list, map_list = _image_list(masks, "masks"), _image_list(maps, "maps")
    if len(mask_list) != len(map_list):
        raise ValueError(
            f"masks has {len(mask_list)} images but maps has {len(map_list)}; "
            "pass one score map per ground-truth mask"
        )
    if not mask_list:
        raise ValueError("masks and maps are empty; pass at least one image")
    for index, (mask, score_map) in enumerate(zip(mask_list, map_list, strict=True)):
        if mask.ndim != 2:
            raise ValueError(
                f"masks[{index}] has shape {mask.shape}; each mask must be a 2-D (H, W) array"
            )
        if mask.shape != np.shape(score_map):
            raise ValueError(
                f"masks[{index}] has shape {mask.shape} but maps[{index}] has shape "
                f"{np.shape(score_map)}; each score map must match its mask"
            )
    bool_masks = [_binary(mask, f"masks[{index}]") for index, mask in enumerate(mask_list)]
    return bool_masks, map_list


def _image_list(images: ImageStack, name: str) -> list[np.ndarray]:
    """Images as a list of arrays; a stacked array is split into views, not copied."""
    if isinstance(images, np.ndarray):
        if images.ndim != 3:
            raise ValueError(
                f"{name} must be an (N, H, W) array or a list of (H, W) arrays; "
                f"got an array of shape {images.shape}"
            )
        return list(images)
    return [np.asarray(image) for image in images]


def _checked_by_class(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Normal scores sorted and anomalous scores, as float64, after checking the inputs."""
    label_array = np.asarray(labels)
    score_array = np.asarray(scores, dtype=np.float64)
    if label_array.ndim != 1 or score_array.ndim != 1:
        raise ValueError(
            f"labels and scores must be 1-D; got shapes {label_array.shape} and {score_array.shape}"
        )
    if label_array.size != score_array.size:
        raise ValueError(
            f"labels has {label_array.size} entries but scores has {score_array.size}; "
            "pass one score per label"
        )
    if label_array.size == 0:
        raise ValueError("labels and scores are empty; pass at least one scored sample")
    is_anomalous = _binary(label_array, "labels")
    score_array = _finite(score_array, "scores")
    return np.sort(score_array[~is_anomalous]), score_array[is_anomalous]


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as booleans, refusing anything but 0/1 (a 0/255 mask is a common slip)."""
    if values.dtype == bool:
        return values
    is_binary = np.isin(values, (0, 1))
    if not is_binary.all():
        offending = values[~is_binary].flat[0]
        raise ValueError(
            f"{name} must contain only 0 and 1 (or booleans) but contains {offending.item()!r}; "
            "convert it first, e.g. mask > 0"
        )
    return values.astype(bool)


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` unchanged, or a ValueError saying how many NaNs (else infinities) and where."""
    if np.isfinite(values).all():
        return values
    is_nan = np.isnan(values)
    is_bad, problem = (is_nan, "NaN") if is_nan.any() else (np.isinf(values), "infinite")
    position = tuple(int(i) for i in np.argwhere(is_bad)[0])
    raise ValueError(
        f"{name} contains {int(is_bad.sum())} {problem} value(s), the first at index "
        f"{position[0] if len(position) == 1 else position}; scores must be finite"
    )
