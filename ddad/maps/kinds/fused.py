"""``score.map: fused``: several kinds' maps, each over its own typical map, combined.

The nearest good patch sees a patch unlike every good patch near it; the feature denoiser may
see what only the whole part says (a band along an edge whose every patch looks good). Each
map divided by its own typical map is about 1 wherever good images are usual, so they combine
on one scale: ``score.fusion`` sum, product or maximum of the ``score.fused_maps``. The
combination is finished like any map, over its own typical map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from ddad.errors import DdadError
from ddad.maps.denoiser import TrainedDenoiser
from ddad.maps.good_images import BatchMap, GoodImages, in_this_process, typical_map
from ddad.maps.kinds.base import MapInput, MapKind, kind_class, register
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import Cost

FUSIONS = {"sum": np.add, "product": np.multiply, "max": np.maximum}  # score.fusion
FUSABLE = ("features", "inversion", "feature_reconstruction")


def fusable(name: str) -> bool:
    """Whether kind ``name`` can be fused: one that reads the input alone (the reconstruct
    stage makes reconstructions for the kind ``score.map`` names, not for its parts)."""
    return name in FUSABLE


@register
class Fused(MapKind):
    """``score.fused_maps`` combined by ``score.fusion``, each over its own typical map."""

    name = "fused"
    learns_from_good_images = True

    def setup(self, unet: torch.nn.Module | None, denoiser: TrainedDenoiser | None) -> None:
        self.parts = [
            kind(asked, self.device, unet, denoiser)
            for kind, asked in self._part_classes(self.settings)
        ]

    @staticmethod
    def part_names(settings: ScoreSettings) -> list[str]:
        """The kinds fused (``fusable`` ones alone)."""
        for name in settings.fused_maps:
            if not fusable(name):
                raise DdadError(
                    f"score.fused_maps: {name} cannot be fused; fuse {', '.join(FUSABLE)}"
                )
        return list(settings.fused_maps)

    @classmethod
    def needs_unet(cls, settings: ScoreSettings) -> bool:
        return any(part.needs_unet(asked) for part, asked in cls._part_classes(settings))

    @classmethod
    def needs_denoiser(cls, settings: ScoreSettings) -> bool:
        return any(part.needs_denoiser(asked) for part, asked in cls._part_classes(settings))

    @classmethod
    def _part_classes(cls, settings: ScoreSettings) -> list[tuple[type[MapKind], ScoreSettings]]:
        """Each part's kind with the settings it is built with."""
        return [(kind_class(n), replace(settings, map=n)) for n in cls.part_names(settings)]

    def fit(self, good: GoodImages, over_batches: BatchMap = in_this_process) -> None:
        """Each part fitted on ``good``, then the typical map of their combination."""
        for part in self.parts:
            part.fit(good, over_batches)
        self.typical = None
        inputs = [MapInput(image) for image in good.typical]
        if inputs:
            self.typical = typical_map(self.raw_maps(inputs, over_batches))

    def fit_for_timing(self, images: np.ndarray) -> None:
        for part in self.parts:
            part.fit_for_timing(images)
        self.typical = np.ones(images.shape[-2:]) if self.settings.reference_images else None

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """Each part's raw maps over its typical map, combined input by input."""
        combine = FUSIONS[self.settings.fusion]
        fused: list[np.ndarray] | None = None
        for part in self.parts:
            typical = 1.0 if part.typical is None else part.typical
            scaled = [raw / typical for raw in part.raw_maps(inputs, over_batches)]
            fused = (
                scaled
                if fused is None
                else [combine(a, b) for a, b in zip(fused, scaled, strict=True)]
            )
        return fused or []

    def cost(self, ensemble: int) -> Cost:
        """The parts' passes added up: each reads its own features."""
        costs = [part.cost(ensemble) for part in self.parts]
        return Cost(*(sum(values) for values in zip(*costs, strict=True)))

    def describe(self) -> str:
        parts = "; ".join(part.describe() for part in self.parts)
        return f"fused map ({self.settings.fusion} of: {parts})"
