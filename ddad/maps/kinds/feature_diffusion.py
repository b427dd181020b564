"""What the kinds that read the feature denoiser share: the backbone's features, whitened as
the denoiser was trained on them, turned into one number per feature cell, resized to the
image, blurred, and finished over the typical map of good images apart from the denoiser's.

The typical map matters here as for the nearest patch: a cell near the border or on a busy
texture scores high in every image, good ones too (docs/accuracy.md measures the maps).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ddad.diffusion.feature_denoiser import feature_diffusion
from ddad.errors import DdadError
from ddad.maps.denoiser import TrainedDenoiser
from ddad.maps.good_images import BatchMap, GoodImages, in_this_process, typical_map
from ddad.maps.kinds.base import FeatureKind, MapInput, each_batch
from ddad.maps.scoring import ScoreSettings, blur
from ddad.maps.sources import Cost


class FeatureDiffusionKind(FeatureKind):
    """A map of what the feature denoiser makes of each cell (``cell_scores``)."""

    learns_from_good_images = True

    def setup(self, unet: torch.nn.Module | None, denoiser: TrainedDenoiser | None) -> None:
        super().setup(unet, denoiser)
        if denoiser is None:
            raise DdadError(
                f"score.map {self.name} reads the category's feature denoiser; "
                "`dvc repro` trains it (stage denoiser@<category>)"
            )
        self.denoiser = denoiser.to(self.device)
        self.alphas = feature_diffusion().alphas_cumprod

    @classmethod
    def needs_denoiser(cls, settings: ScoreSettings) -> bool:
        return True

    def fit(self, good: GoodImages, over_batches: BatchMap = in_this_process) -> None:
        """The typical map of the ``good.typical`` images (none without them): the denoiser
        itself learnt from the bank images when it was trained."""
        inputs = [MapInput(image) for image in good.typical]
        self.typical = typical_map(self.raw_maps(inputs, over_batches)) if inputs else None

    def fit_for_timing(self, images: np.ndarray) -> None:
        """A flat typical map when ``reference_images`` asks for one: dividing costs the same."""
        self.typical = np.ones(images.shape[-2:]) if self.settings.reference_images else None

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """``cell_scores`` of each input's whitened features, resized bilinearly to the image
        and blurred by ``sigma``/``kernel_size``."""
        s = self.settings

        def mapped(batch: Sequence[MapInput]) -> np.ndarray:
            images = [item.image for item in batch]
            features = self.denoiser.whitening.apply(self.source(images))
            cells = self.cell_scores(features)[:, None].float()
            size = images[0].shape[-2:]
            resized = F.interpolate(cells, size=size, mode="bilinear", align_corners=False)[:, 0]
            return blur(resized.double().cpu(), s.sigma, s.kernel_size).numpy()

        return each_batch(mapped, inputs, over_batches)

    def cost(self, ensemble: int) -> Cost:
        """One pass of the source and ``denoiser_passes`` of the denoiser per image."""
        return self.source.cost(1)._replace(denoiser_passes=self.denoiser_passes())

    @abstractmethod
    def denoiser_passes(self) -> int:
        """Denoiser passes per image."""

    @abstractmethod
    def cell_scores(self, features: torch.Tensor) -> torch.Tensor:
        """[N, h, w] scores of whitened features [N, D, h, w]: higher is less like good ones."""
