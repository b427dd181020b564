"""``score.map: inversion`` (InvAD's way): how unlikely the noise is that a cell's features
invert to.

DDIM inversion (ddad.diffusion.inversion) walks the whitened features from t = 0 to the noise
end in ``score.inversion_steps`` denoiser passes. Features like the good ones the denoiser
learnt land where N(0, I) puts its mass; features it never saw land far out. Each cell scores
its squared norm per channel, |z|^2 / D, which for N(0, I) is about 1 and ranks cells as their
negative log-likelihood does.
"""

from __future__ import annotations

import torch

from ddad.diffusion.inversion import invert
from ddad.maps.kinds.base import register
from ddad.maps.kinds.feature_diffusion import FeatureDiffusionKind
from ddad.maps.sources import describe_source


@register
class NoiseInversion(FeatureDiffusionKind):
    """The inverted noise's squared norm per channel, cell by cell."""

    name = "inversion"

    def inverted(self, features: torch.Tensor) -> torch.Tensor:
        """The noise end [N, D, h, w] that whitened ``features`` invert to."""
        return invert(self.denoiser.model, self.alphas, features, self.settings.inversion_steps)

    def cell_scores(self, features: torch.Tensor) -> torch.Tensor:
        return self.inverted(features).square().mean(dim=1)

    def denoiser_passes(self) -> int:
        return self.settings.inversion_steps

    def describe(self) -> str:
        steps = self.settings.inversion_steps
        return (
            f"inversion map (1 {describe_source(self.settings)}, {steps} feature-denoiser "
            f"passes to the noise end, |z|^2/D per cell, over the typical map)"
        )
