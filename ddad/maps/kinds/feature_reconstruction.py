"""``score.map: feature_reconstruction`` (DDAD's and LafitE's way, in feature space): how far
each cell's features lie from what the denoiser brings back.

The whitened features are noised to ``score.feature_t`` and denoised in
``score.feature_steps`` DDIM passes (ddad.diffusion.inversion), each clean estimate pulled
``score.feature_conditioning`` of the way toward the input. A good cell comes back close to
itself; a defect is brought back toward what good parts look like there. Every image is noised
with the same fixed draw, so a score does not depend on which images share its batch, and the
draw's own pattern is the same in the typical map, which divides it out.
"""

from __future__ import annotations

import torch

from ddad.diffusion.inversion import reconstruct_features
from ddad.maps.kinds.base import register
from ddad.maps.kinds.feature_diffusion import FeatureDiffusionKind
from ddad.maps.sources import describe_source

NOISE_SEED = 0


@register
class FeatureReconstruction(FeatureDiffusionKind):
    """The squared distance per channel between the features and their reconstruction."""

    name = "feature_reconstruction"

    def cell_scores(self, features: torch.Tensor) -> torch.Tensor:
        s = self.settings
        generator = torch.Generator().manual_seed(NOISE_SEED)
        noise = torch.randn(features.shape[1:], generator=generator).to(features)
        back = reconstruct_features(
            self.denoiser.model,
            self.alphas,
            features,
            s.feature_t,
            s.feature_steps,
            noise,
            s.feature_conditioning,
        )
        return (features - back).square().mean(dim=1)

    def denoiser_passes(self) -> int:
        return self.settings.feature_steps

    def describe(self) -> str:
        s = self.settings
        return (
            f"feature reconstruction map (1 {describe_source(s)}, features noised to "
            f"t={s.feature_t} and denoised in {s.feature_steps} feature-denoiser passes, "
            f"squared distance per cell, over the typical map)"
        )
