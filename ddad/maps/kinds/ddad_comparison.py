"""``score.map: ddad``, DDAD's map (Mousakhan et al. 2023): what the reconstruction failed to
bring back, in pixels and in the eyes of a network that knows what images look like.

The diffusion model noises an image to t and denoises it, conditioned on the input
(``reconstruct.conditioning``), so a good part comes back as it was and a defect comes back
repaired. Pixel differences alone call every small misalignment or texture grain a defect, and
miss a defect of the input's own colour; the distance between the input's and the
reconstruction's features (one minus their cosine similarity at each patch, the features
``score.backbone`` names) sees what changed in kind. The map is their sum, the features weighted
by ``score.feature_weight``, blurred like the error maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ddad.maps.good_images import BatchMap, in_this_process
from ddad.maps.kinds.base import FeatureKind, MapInput, each_input, register
from ddad.maps.scoring import ScoreSettings, blur
from ddad.maps.sources import Cost, FeatureSource, describe_source


def compared_map(
    source: FeatureSource,
    image: np.ndarray,
    reconstructions: np.ndarray,
    settings: ScoreSettings,
) -> np.ndarray:
    """[H, W] map of an ``image`` [C, H, W] and its ``reconstructions`` [E, C, H, W], both in
    [-1, 1]: the mean absolute pixel difference over channels plus ``settings.feature_weight``
    times the feature distance, each averaged over the E reconstructions, then blurred by
    ``settings.sigma`` and ``kernel_size``. Stored reconstructions may be of a narrower float
    type than the image; they are compared in the image's."""
    size = image.shape[-2:]
    reconstructions = reconstructions.astype(image.dtype)
    pixels = np.abs(reconstructions - image[None]).mean(axis=(0, 1))
    features = source([image, *reconstructions]).float()
    similarity = F.cosine_similarity(features[1:], features[:1], dim=1)  # [E, h, w]
    distance = (1 - similarity).clamp_min(0).mean(dim=0, keepdim=True)[None]
    distance = F.interpolate(distance, size=size, mode="bilinear", align_corners=False)[0, 0]
    amap = torch.from_numpy(pixels).double() + settings.feature_weight * distance.double().cpu()
    return blur(amap, settings.sigma, settings.kernel_size).numpy()


@register
class DdadComparison(FeatureKind):
    """Pixel plus feature distance between each input and its reconstructions."""

    name = "ddad"
    compares_reconstructions = True

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """``compared_map`` of each input, one feature batch (the input and its
        reconstructions) at a time."""

        def mapped(item: MapInput) -> np.ndarray:
            return compared_map(self.source, item.image, item.reconstructions, self.settings)

        return each_input(mapped, inputs, over_batches)

    def cost(self, ensemble: int) -> Cost:
        return self.source.cost(1 + ensemble)

    def describe(self) -> str:
        weight = self.settings.feature_weight
        eyes = describe_source(self.settings)
        return f"DDAD's map (pixel + {weight:g} x feature distance, {eyes} per image)"
