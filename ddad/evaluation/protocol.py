"""One category's figures from its image scores and model-size maps, under one protocol.

The evaluate stage and ``ddad baseline`` both end here, so the detector and the baseline it must
beat are measured on the same images, at the same resolution, with the same metrics.

The protocol's two choices, and why they are the defaults:

* ``resolution: native``: each map is resized bilinearly to its ground truth's own size (the
  photograph's), as MVTec AD's evaluation does. Shrinking the masks to the model's input
  instead (``model``, the seed's way) erases small defects: a seventh of the ball-screw pitting
  masks are empty at 64 x 64, so those defects were never measured.
* ``halves: true``: the figures reported are the confirmation half's (ddad.data.halves); the tuning
  half's are returned beside them for choosing settings.

A defective image without a mask counts for the image figures alone: the pixel figures and lit
shares are those of the images whose ground truth is known, NaN (written empty) when no
defective image has a mask, and each set of figures that leaves an image out, or whose
``lit_defective`` masks leave no defect-free pixel, comes with a one-line note saying so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ddad.data.halves import confirmation_half
from ddad.data.imageio import Size, resize_map
from ddad.data.layout import TestImage
from ddad.data.preprocess import model_mask, native_mask
from ddad.evaluation import metrics

RESOLUTIONS = ("native", "model")


@dataclass(frozen=True)
class Protocol:
    """How maps become figures (params.yaml's ``evaluate`` section, and the model's size and
    mask resize for ``resolution: model``)."""

    metrics: tuple[str, ...] = metrics.METRIC_NAMES
    resolution: str = "native"
    halves: bool = True
    split_seed: int = 0
    image_size: Size = 64
    mask_resize: str = "nearest"


def evaluate_maps(
    items: Sequence[TestImage],
    scores: ArrayLike,
    maps: Sequence[np.ndarray],
    protocol: Protocol,
    threshold: float = math.nan,
) -> dict[str, Any]:
    """Figures of one category's test images (``items``, with their image ``scores`` and
    model-size ``maps`` in the same order); ``threshold`` is the category's detect threshold,
    which the lit shares compare map pixels with (NaN when none is known: they are then NaN).

    Returns ``confirmation`` (the asked-for metrics and ``img_auc_se``, the image AUROC's
    standard error at that many images), ``tuning`` (the metrics of the other half; the same
    images as confirmation when ``halves`` is off), ``defects`` (each defect kind of the
    confirmation half against its good images, with its image count), ``images`` (the
    confirmation half's good and defective counts), ``roc`` (the confirmation half's ROC
    points) and ``notes`` (``confirmation``, ``tuning`` and ``defects``' kinds that have one:
    the line saying which defective images their pixel figures leave out, or why those are
    empty).
    """
    if protocol.resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {protocol.resolution!r}; use one of {RESOLUTIONS}")
    labels = np.array([item.label for item in items])
    kinds = np.array([item.defect for item in items])
    scores = np.asarray(scores, dtype=np.float64)
    confirm = (
        confirmation_half([item.key for item in items], list(kinds), protocol.split_seed)
        if protocol.halves
        else np.ones(len(items), dtype=bool)
    )

    @functools.cache  # each image's truth is read once, though halves and kinds overlap
    def truth(index: int) -> tuple[np.ndarray | None, np.ndarray]:
        if not items[index].has_truth:
            return None, maps[index]
        if protocol.resolution == "model":
            return model_mask(items[index], protocol.image_size, protocol.mask_resize), maps[index]
        mask = native_mask(items[index])
        return mask, resize_map(maps[index], mask.shape)

    def measured(pick: np.ndarray) -> dict[str, float]:
        chosen = np.flatnonzero(pick)
        if not chosen.size:  # a half can be empty when every kind has a single image
            return {name: float("nan") for name in protocol.metrics}
        masks, amaps = zip(*(truth(i) for i in chosen), strict=True)
        return metrics.summary(
            labels[chosen], scores[chosen], masks, amaps, protocol.metrics, threshold
        )

    good = labels == 0
    tuned = ~confirm if protocol.halves else confirm
    kinds_of = {kind: confirm & (good | (kinds == kind)) for kind in sorted(set(kinds[~good]))}
    reported, tuning = measured(confirm), measured(tuned)
    defects = {kind: measured(pick) for kind, pick in kinds_of.items()}
    halves = {"confirmation": confirm, "tuning": tuned}
    notes: dict[str, Any] = _notes(
        items, halves, {"confirmation": reported, "tuning": tuning}, protocol, threshold
    )
    notes["defects"] = _notes(items, kinds_of, defects, protocol, threshold)
    spread = metrics.auroc_standard_error(
        reported.get("img_auc", float("nan")),
        int((confirm & ~good).sum()),
        int((confirm & good).sum()),
    )
    return {
        "confirmation": reported | {"img_auc_se": spread},
        "tuning": tuning,
        "defects": {
            kind: {"images": int((confirm & (kinds == kind)).sum())} | found
            for kind, found in defects.items()
        },
        "images": {"good": int((confirm & good).sum()), "defective": int((confirm & ~good).sum())},
        "roc": metrics.roc_points(labels[confirm], scores[confirm]),
        "notes": notes,
    }


def _notes(
    items: Sequence[TestImage],
    picks: dict[str, np.ndarray],
    found: dict[str, dict[str, float]],
    protocol: Protocol,
    threshold: float,
) -> dict[str, str]:
    """The note of each named set of figures (``found``, measured on the images ``picks``
    chooses) that has one."""
    lines = {
        name: _truth_note(
            [items[i] for i in np.flatnonzero(pick)], found[name], protocol, threshold
        )
        for name, pick in picks.items()
    }
    return {name: line for name, line in lines.items() if line}


def _truth_note(
    items: Sequence[TestImage], found: dict[str, float], protocol: Protocol, threshold: float
) -> str | None:
    """The line that goes with the figures ``found`` on ``items`` when ground truth shaped them:
    which defective images the pixel figures leave out for want of a mask (or that all are
    empty, when none has one), and that ``lit_defective`` is empty because every mask covers
    its whole image. None when neither applies."""
    affected = [name for name in protocol.metrics if name in metrics.DEFECT_PIXEL_METRICS]
    defective = [item for item in items if item.label]
    unmasked = [item.key for item in defective if not item.has_truth]
    lines = []
    if affected and unmasked and len(unmasked) == len(defective):
        lines.append(f"no defective image has a mask, so {', '.join(affected)} are empty")
    elif affected and unmasked:
        lines.append(
            f"{', '.join(affected)} leave out the {len(unmasked)} of {len(defective)} defective "
            f"images without a mask ({_listed(unmasked)})"
        )
    if (
        len(unmasked) < len(defective)
        and math.isnan(found.get("lit_defective", 0.0))
        and not math.isnan(threshold)
    ):
        lines.append(
            "lit_defective is empty: every mask covers its whole image, leaving no defect-free "
            "pixel of a defective image to light"
        )
    return "; ".join(lines) or None


def _listed(keys: list[str], shown: int = 3) -> str:
    """A few keys, and how many more: a note stays one line with hundreds of images."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def one_image_step(good: int, defective: int) -> float:
    """The most one image can move an image AUROC measured on ``good`` and ``defective`` images:
    1 / the smaller count (one defective image passing every good one, or the reverse). Two
    settings closer than this on so small a half are not told apart. Inf for an empty side."""
    smaller = min(good, defective)
    return 1.0 / smaller if smaller > 0 else math.inf
