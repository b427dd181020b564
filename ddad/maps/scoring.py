"""How every map is finished: the score settings, the blur, the closing, the image score.

Each map kind (ddad.maps.kinds) makes its raw map its own way; ``finished`` turns any of them
into the map reported and one number per image, so the pipeline, ``ddad detect`` and ``ddad
baseline`` agree. The seed's image score is the map's max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ERRORS = ("squared", "absolute")
IMAGE_SCORES = ("max", "topk_mean", "spots")
SPOT_LENGTH = 9  # map pixels: longer structures are streaks, not spots
_SPOT_DIRECTIONS = 12


@dataclass(frozen=True)
class ScoreSettings:
    """How a map and an image score are made (params.yaml ``score``, same defaults)."""

    sigma: float = 1.4
    kernel_size: int = 7
    error: str = "squared"
    image_score: str = "topk_mean"
    top_fraction: float = 0.01
    map: str = "features"
    backbone: str = "efficientnet-lite0"
    backbone_size: int | list[int] | str = "auto"
    backbone_pooling: int = 1
    backbone_strides: tuple[int, ...] = (8, 16)
    feature_weight: float = 1.0
    bank_images: int = 500
    bank_vectors: int = 60000
    coreset: float = 1.0
    reference_images: int = 25
    search_radius: int = 1
    whiten: bool = True
    feature_model: str = "nearest"
    closing: int = 0
    divide_map: bool = True
    inversion_steps: int = 3
    feature_t: int = 250
    feature_steps: int = 3
    feature_conditioning: float = 0.0
    fused_maps: tuple[str, ...] = ("features", "inversion")
    fusion: str = "sum"


DEFAULT_SCORE = ScoreSettings()  # a frozen default, safe to share as an argument default


def gaussian_kernel(sigma: float, size: int = 0) -> torch.Tensor:
    """1-D normalised Gaussian; ``size`` 0 picks 2*ceil(3 sigma)+1 taps.

    The size must be odd: an even kernel has no centre tap and would shift the map by half a pixel.
    """
    if size and size % 2 == 0:
        raise ValueError(f"kernel size must be 0 or odd, not {size}")
    size = size or 2 * math.ceil(3 * sigma) + 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur(maps: torch.Tensor, sigma: float, size: int = 0) -> torch.Tensor:
    """Separable Gaussian blur of [..., H, W] with reflect padding; sigma 0 returns the input."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma, size).to(maps)
    pad = len(kernel) // 2
    shape = maps.shape
    flat = maps.reshape(-1, 1, *shape[-2:])
    mode = "reflect" if min(shape[-2:]) > pad else "replicate"
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode=mode), kernel.view(1, 1, -1, 1))
    return flat.reshape(shape)


def image_score(amap: np.ndarray, kind: str, top_fraction: float) -> float:
    """One number per image: the map's max, or the mean of its top ``top_fraction`` pixels,
    of the map itself (``topk_mean``) or of its ``spot_map`` (``spots``).

    No defaults: every caller passes ``ScoreSettings``' pair, so the pipeline, ``ddad detect``
    and ``ddad baseline`` rank images the same way."""
    values = np.asarray(amap, dtype=np.float64)
    flat = (spot_map(values, SPOT_LENGTH) if kind == "spots" else values).ravel()
    if kind == "max":
        return float(flat.max())
    k = max(1, int(round(top_fraction * flat.size)))
    return float(np.partition(flat, flat.size - k)[-k:].mean())


def finished(
    amap: np.ndarray, settings: ScoreSettings, typical: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """The map as reported and its image score: the score stage, ``ddad detect`` and ``ddad
    baseline`` finish every map here, so they agree.

    A feature map comes with its ``typical`` map (ddad.maps.features): the image score is always of
    the map over it, ``closed`` by ``settings.closing``. The map reported is that one too, or,
    with ``settings.divide_map`` false, the map over the typical map's mean (the same units,
    closed the same way). Dividing per position also dims what stands out near a border, where
    every good image is far from the bank: on the magnetic tiles, where breaks and frays start
    at the border, the undivided map outlines defects better; on the aligned ball screws, whose
    good parts differ from place to place, it outlines them far worse (docs/accuracy.md).
    """
    divided = amap if typical is None else amap / typical
    final = closed(divided, settings.closing)
    score = image_score(final, settings.image_score, settings.top_fraction)
    if typical is not None and not settings.divide_map:
        final = closed(amap / typical.mean(), settings.closing)
    return final, score


def closed(amap: np.ndarray, reach: int) -> np.ndarray:
    """The greyscale closing of a 2-D ``amap`` by a square of side ``2 * reach + 1``: a dip
    between high values less than that far apart rises to the lower of them; 0 returns the map.

    Feature maps light a large defect's rim more than its inside (on the magnetic tiles an uneven
    band's inside matches good patches of other tiles); the closing fills the inside
    (docs/accuracy.md). Borders repeat the edge, so the result is >= ``amap`` everywhere.
    """
    if reach <= 0:
        return amap
    side = 2 * reach + 1
    grown = ndimage.maximum_filter(amap, size=side, mode="nearest")
    return ndimage.minimum_filter(grown, size=side, mode="nearest")


def spot_map(amap: np.ndarray, length: int) -> np.ndarray:
    """What of a 2-D ``amap`` is compact: the map less its greyscale opening by a line of
    ``length`` pixels, in whichever of 12 directions keeps most of it.

    A streak or an edge longer than ``length`` in some direction survives that direction's
    opening and cancels; a spot shorter than ``length`` every way survives no opening and stays.
    On the ball screws, whose good parts carry machining streaks and whose defects are pits,
    it ranks images better; on the magnetic tiles it erases the large defects
    (docs/accuracy.md). The result is >= 0 and <= ``amap``.
    """
    opened = [
        _opening(amap, _line(length, 180.0 * i / _SPOT_DIRECTIONS)) for i in range(_SPOT_DIRECTIONS)
    ]
    return amap - np.max(opened, axis=0)


def _opening(amap: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """A greyscale opening that ignores what lies outside the map, so it never exceeds it.

    scipy's default mirrors the map at its borders, which turns a slanted line into another
    there, and the opening then rose above the map (a negative spot score)."""
    eroded = ndimage.grey_erosion(amap, footprint=footprint, mode="constant", cval=np.inf)
    return ndimage.grey_dilation(eroded, footprint=footprint, mode="constant", cval=-np.inf)


def _line(length: int, degrees: float) -> np.ndarray:
    """A ``length`` x ``length`` footprint of the centred line at ``degrees``."""
    footprint = np.zeros((length, length), dtype=bool)
    centre = length // 2
    steps = np.linspace(-centre, centre, 4 * length)
    angle = math.radians(degrees)
    rows = np.rint(centre + steps * math.sin(angle)).astype(int)
    columns = np.rint(centre + steps * math.cos(angle)).astype(int)
    footprint[rows, columns] = True
    return footprint
