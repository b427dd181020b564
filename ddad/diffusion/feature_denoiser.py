"""A diffusion model over a pretrained backbone's feature grid, not over pixels.

A small UNet trained for minutes on a CPU cannot learn in pixels what a good part looks like;
over an ImageNet network's features (a 28 x 28 grid of 152 channels for a 224-pixel input) a
few residual blocks can, at a small fraction of a pixel UNet's cost. The network predicts the
noise (epsilon) under guided-diffusion's linear 1000-step schedule, so ddad.diffusion.train
trains it like the UNet (crops of the grid, EMA, resume, ranks). Its blocks dilate 1, 2, 4, ...
so that a few of them see most of the grid: a defect that only the whole part betrays (a band
along an edge) is within its view. The features it sees are whitened (channels centred and
decorrelated over good images), so that N(0, I), the noise end of the schedule, fits them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from guided_diffusion.nn import timestep_embedding
from guided_diffusion.script_util import create_gaussian_diffusion
from torch import nn

from ddad.diffusion.models import save_atomically
from ddad.errors import DdadError

DILATIONS = (1, 2, 4)  # block i dilates DILATIONS[i % 3]
GROUPS = 8  # group-norm groups; the width must be a multiple


@dataclass(frozen=True)
class DenoiserShape:
    """The denoiser's size (params.yaml ``denoiser``, the same defaults): ``width`` channels
    inside, ``blocks`` residual blocks."""

    width: int = 128
    blocks: int = 5


class _Block(nn.Module):
    """Two dilated 3 x 3 convolutions with the timestep added between them, and a skip."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.first = nn.Sequential(
            nn.GroupNorm(GROUPS, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
        )
        self.time = nn.Linear(width, width)
        self.second = nn.Sequential(
            nn.GroupNorm(GROUPS, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation),
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        inner = self.first(h) + self.time(emb)[..., None, None]
        return h + self.second(inner)


class FeatureDenoiser(nn.Module):
    """Predicts the noise in noised features [N, ``channels``, h, w] at timesteps [N]."""

    def __init__(self, channels: int, shape: DenoiserShape = DenoiserShape()) -> None:
        super().__init__()
        if shape.width % GROUPS:
            raise DdadError(f"denoiser.width {shape.width}: must be a multiple of {GROUPS}")
        self.channels, self.shape = channels, shape
        self.time = nn.Sequential(
            nn.Linear(shape.width, shape.width), nn.SiLU(), nn.Linear(shape.width, shape.width)
        )
        self.inp = nn.Conv2d(channels, shape.width, 3, padding=1)
        self.blocks = nn.ModuleList(
            _Block(shape.width, DILATIONS[i % len(DILATIONS)]) for i in range(shape.blocks)
        )
        self.out = nn.Sequential(
            nn.GroupNorm(GROUPS, shape.width),
            nn.SiLU(),
            nn.Conv2d(shape.width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting no noise: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.shape.width).to(x.dtype))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


def feature_diffusion() -> GaussianDiffusion:
    """guided-diffusion's linear 1000-step schedule, epsilon prediction, fixed variance: what
    the denoiser is trained under and inverted with."""
    return create_gaussian_diffusion(steps=1000, learn_sigma=False, noise_schedule="linear")


def save_denoiser(model: FeatureDenoiser, path: Path, extra: dict[str, Any]) -> None:
    """Write ``model`` (weights and shape) with ``extra`` (tensors and plain values that say
    what it expects, e.g. its whitening) atomically."""
    payload = {
        "weights": model.state_dict(),
        "channels": model.channels,
        "shape": asdict(model.shape),
        "extra": extra,
    }
    save_atomically(payload, path)


def load_denoiser(path: Path) -> tuple[FeatureDenoiser, dict[str, Any]]:
    """The model and extras ``save_denoiser`` wrote, read without running code from the file."""
    if not path.is_file():
        raise DdadError(
            f"{path}: no feature denoiser here; `dvc repro` trains it for a score.map that reads it"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = FeatureDenoiser(payload["channels"], DenoiserShape(**payload["shape"]))
        model.load_state_dict(payload["weights"])
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DdadError(f"{path}: not a feature denoiser ddad wrote ({reason})") from None
    return model.eval(), payload["extra"]
