"""``score.map: features``, the default: each patch scored by how far its features lie from the
nearest good patch (ddad.maps.search), over what is typical at that place.

The features are an ImageNet-trained EfficientNet-Lite's by default (ddad.maps.sources). A
defect is a patch unlike every good patch near it. The raw map is blurred like an error map;
``finish`` divides it by the typical map, the mean map of good training images apart from the
bank: a patch near the border is far from every bank patch even in a good image (borders are
few and varied), and raw distances would call borders defects. docs/accuracy.md measures the
search, the whitening and the typical map on real photographs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ddad.errors import DdadError
from ddad.maps.good_images import (
    BatchMap,
    GoodImages,
    batches,
    in_this_process,
    typical_map,
)
from ddad.maps.kinds.base import FeatureKind, MapInput, each_batch, register
from ddad.maps.scoring import blur
from ddad.maps.search import Search, search_for
from ddad.maps.sources import Cost, describe_source


@register
class NearestPatch(FeatureKind):
    """Distances to the nearest good patch, learnt from a bank of good training images."""

    name = "features"
    learns_from_good_images = True

    search: Search | None = None  # fit's, over the bank

    def fit(self, good: GoodImages, over_batches: BatchMap = in_this_process) -> None:
        """The search over the bank images' features, then the typical map of the others."""
        features = [f.to(self.device) for f in over_batches(self.source, batches(good.bank))]
        self._learn(features, good.typical, over_batches)

    def fit_for_timing(self, images: np.ndarray) -> None:
        """A search shaped like the real one, over ``images``' features repeated: as many maps
        as ``bank_images`` (or per-position Gaussians of them), or enough for ``bank_vectors``
        rows (radius -1), cut to the same ``coreset`` share; a typical map when
        ``reference_images`` asks for one."""
        s = self.settings
        maps = self.source(list(images))
        if s.search_radius >= 0 or s.feature_model == "gaussian":
            count = s.bank_images
        else:
            count = math.ceil(s.bank_vectors / maps[0, 0].numel())
        bank = maps.repeat(math.ceil(count / len(maps)), 1, 1, 1)[:count]
        self._learn([bank], [])
        self.typical = np.ones(images.shape[-2:]) if s.reference_images else None

    def _learn(
        self,
        features: list[torch.Tensor],
        typical_images: Sequence[np.ndarray],
        over_batches: BatchMap = in_this_process,
    ) -> None:
        self.search, self.typical = search_for(features, self.settings), None
        if typical_images:
            inputs = [MapInput(image) for image in typical_images]
            self.typical = typical_map(self.raw_maps(inputs, over_batches))

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """Nearest-good-patch distances of each input, blurred by ``sigma``/``kernel_size``."""
        if self.search is None:
            raise DdadError(
                "score.map features has no good reference yet: fit it on good training images "
                "(Detector.load and the score stage do)"
            )
        search, s = self.search, self.settings

        def mapped(batch: Sequence[MapInput]) -> np.ndarray:
            images = [item.image for item in batch]
            nearest = search.distances(self.source(images), images[0].shape[-2:])
            return blur(nearest.double().cpu(), s.sigma, s.kernel_size).numpy()

        return each_batch(mapped, inputs, over_batches)

    def cost(self, ensemble: int) -> Cost:
        return self.source.cost(1)

    def describe(self) -> str:
        s = self.settings
        eyes = describe_source(s)
        typical = ", over the typical map" if s.reference_images else ""
        if s.feature_model == "gaussian":
            return (
                f"feature map (1 {eyes}, Mahalanobis distance to the good features' "
                f"Gaussian at each position, from {s.bank_images} good images{typical})"
            )
        if s.search_radius >= 0:
            cells = "cell" if s.search_radius == 1 else "cells"
            where = f"within {s.search_radius} {cells} in {s.bank_images} good images"
            kept = " at each cell"
        else:
            where, kept = f"of {s.bank_vectors:,} patches", ""
        if s.coreset < 1:
            where += f" (a greedy coreset of {100 * s.coreset:g}% of them{kept})"
        space = "whitened features" if s.whiten else "features"
        return f"feature map (1 {eyes}, nearest in {space} {where}{typical})"
