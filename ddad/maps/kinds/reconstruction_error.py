"""``score.map: reconstruction``, the seed's map: what did not come back, pixel by pixel.

Squared (or absolute, ``score.error``) difference per pixel between the input and each
reconstruction, Gaussian blur (7x7, sigma 1.4, reflect padding in the seed) per channel, summed
over channels, averaged over the ensemble. Everything after the squaring is linear, so the
order of blur, sum and mean does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ddad.maps.good_images import BatchMap, in_this_process
from ddad.maps.kinds.base import MapInput, MapKind, each_input, register
from ddad.maps.scoring import blur
from ddad.maps.sources import Cost


def anomaly_map(
    image: torch.Tensor,
    reconstructions: torch.Tensor,
    sigma: float = 1.4,
    kernel_size: int = 7,
    error: str = "squared",
) -> torch.Tensor:
    """Map [H, W] from an image [C, H, W] and its reconstructions [E, C, H, W] (float64)."""
    diff = reconstructions.double() - image.double()[None]
    per_pixel = diff.square() if error == "squared" else diff.abs()
    return blur(per_pixel, sigma, kernel_size).sum(dim=1).mean(dim=0)


@register
class ReconstructionError(MapKind):
    """The error of each input's reconstructions."""

    name = "reconstruction"
    compares_reconstructions = True

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """``anomaly_map`` of each input (stored float16 reconstructions are read in float32)."""
        s = self.settings

        def mapped(item: MapInput) -> np.ndarray:
            recons = np.asarray(item.reconstructions, dtype=np.float32)
            return anomaly_map(
                torch.from_numpy(item.image),
                torch.from_numpy(recons),
                sigma=s.sigma,
                kernel_size=s.kernel_size,
                error=s.error,
            ).numpy()

        return each_input(mapped, inputs, over_batches)

    def cost(self, ensemble: int) -> Cost:
        return Cost()

    def describe(self) -> str:
        return "reconstruction-error map"
