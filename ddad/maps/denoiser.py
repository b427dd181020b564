"""The feature denoiser as the maps use it: a diffusion model over a backbone's whitened
features (ddad.diffusion.feature_denoiser) with the whitening it was trained under.

The whitening is the nearest-patch search's (ddad.maps.search.fit_whitening), fitted on the
same bank images' features, so both maps see the same space; in it good features have about
unit spread in every direction, as the noise end of the schedule has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ddad.diffusion.feature_denoiser import (
    DenoiserShape,
    FeatureDenoiser,
    feature_diffusion,
    load_denoiser,
    save_denoiser,
)
from ddad.diffusion.train import Resume, TrainConfig, TrainLog, train_diffusion
from ddad.maps.search import Whitening, fit_whitening

DENOISER_FILE = "denoiser.pt"
T_RANGE = (0, 999)  # trained on every noise level: inversion walks all the way up


@dataclass(frozen=True)
class DenoiserSettings:
    """The feature denoiser's size and training (params.yaml ``denoiser``, the same defaults):
    ``width`` channels in ``blocks`` residual blocks, trained ``steps`` steps of ``batch_size``
    random ``crop`` x ``crop`` cell crops of the feature grid (0: whole grids)."""

    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    ema: float = 0.995
    crop: int = 14
    width: int = 64
    blocks: int = 5
    seed: int = 0

    @property
    def shape(self) -> DenoiserShape:
        """The network's size."""
        return DenoiserShape(self.width, self.blocks)

    def train_config(self) -> TrainConfig:
        """ddad.diffusion.train's knobs for this training (nothing held out: the typical map's
        images are not the denoiser's)."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            ema=self.ema,
            t_range=T_RANGE,
            crop=self.crop,
            val_images=0,
            seed=self.seed,
        )


@dataclass(frozen=True)
class TrainedDenoiser:
    """A feature denoiser and the whitening of the features it reads."""

    model: FeatureDenoiser
    whitening: Whitening

    def to(self, device: torch.device) -> TrainedDenoiser:
        """This denoiser on ``device``, in eval mode."""
        mean, matrix = self.whitening
        return TrainedDenoiser(
            self.model.to(device).eval(), Whitening(mean.to(device), matrix.to(device))
        )

    def save(self, path: Path) -> None:
        """Write it to ``path`` (atomically)."""
        mean, matrix = self.whitening
        save_denoiser(self.model, path, {"mean": mean.cpu(), "matrix": matrix.cpu()})

    @classmethod
    def load(cls, path: Path) -> TrainedDenoiser:
        """What ``save`` wrote (a missing or foreign file: one clear DdadError)."""
        model, extra = load_denoiser(path)
        return cls(model, Whitening(extra["mean"], extra["matrix"]))


def new_denoiser(channels: int, shape: DenoiserShape, seed: int = 0) -> FeatureDenoiser:
    """An untrained denoiser for ``channels`` feature channels, its weights drawn by ``seed``."""
    torch.manual_seed(seed)
    return FeatureDenoiser(channels, shape)


def untrained(channels: int, shape: DenoiserShape) -> TrainedDenoiser:
    """An untrained denoiser with identity whitening: what ``ddad bench`` times, as a trained
    one of the same shape costs as much."""
    identity = Whitening(torch.zeros(channels), torch.eye(channels))
    return TrainedDenoiser(new_denoiser(channels, shape).eval(), identity)


def whitened_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, Whitening]:
    """Good features (batches of [N, D, h, w]) whitened over all of them, and that whitening."""
    bank = torch.cat(features)
    whitening = fit_whitening(bank)
    return whitening.apply(bank), whitening


def train_denoiser(
    model: FeatureDenoiser,
    features: torch.Tensor,
    whitening: Whitening,
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    resume: Resume | None = None,
    progress: bool = True,
) -> tuple[TrainedDenoiser, TrainLog]:
    """``model`` trained on whitened good ``features`` [N, D, h, w] (on the CPU) by
    ddad.diffusion.train with ``config`` (its crops are of the feature grid); the EMA weights
    and the loss log."""
    trained, log = train_diffusion(
        model,
        feature_diffusion(),
        features,
        config,
        device=device,
        resume=resume,
        progress=progress,
    )
    return TrainedDenoiser(trained.cpu().eval(), whitening), log
