"""Whose features describe a patch: an ImageNet-trained EfficientNet-Lite's (the default,
ddad.maps.backbone) or the trained UNet's own encoder (``score.backbone: unet``).

The maps that read features (the nearest good patch, DDAD's comparison) ask this module for a
``FeatureSource`` and for what one pass of it costs; only the UNet's source needs the trained
UNet, so a stage that maps with a Lite backbone never loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from guided_diffusion.nn import timestep_embedding

from ddad.diffusion.threads import same_kernels_on_any_thread_count
from ddad.maps.backbone import BACKBONES, backbone_features, load_backbone, seen_size
from ddad.maps.scoring import ScoreSettings

UNET = "unet"  # score.backbone: the trained UNet's encoder
SOURCES = (UNET, *BACKBONES)
FEATURE_BLOCKS = (1, 3)  # the UNet's first input blocks at full and at half resolution
_NEIGHBOURHOOD = 3


class Cost(NamedTuple):
    """Network passes per image a map spends beyond the reconstruct stage's: partial or whole
    UNet passes, passes of a pretrained backbone, and of the feature denoiser."""

    unet_passes: float = 0.0
    backbone_passes: float = 0.0
    denoiser_passes: float = 0.0


@dataclass(frozen=True)
class FeatureSource:
    """What describes each patch of a batch of model inputs: ``extract`` maps images [N, C, H, W]
    on ``device`` to features [N, D, h, w] there; ``reads_unet`` says whose passes they are."""

    extract: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    reads_unet: bool = False

    def __call__(self, batch: Sequence[np.ndarray]) -> torch.Tensor:
        """Features of a batch of [C, H, W] arrays."""
        return self.extract(torch.from_numpy(np.stack(batch)).to(self.device))

    def cost(self, passes: float) -> Cost:
        """``passes`` passes of this source per image, as a ``Cost``."""
        count = float(passes)
        return Cost(unet_passes=count) if self.reads_unet else Cost(backbone_passes=count)


def reads_unet(settings: ScoreSettings) -> bool:
    """Whether ``settings.backbone`` is the trained UNet, which must then be loaded."""
    return settings.backbone == UNET


def feature_source(
    settings: ScoreSettings, device: torch.device, unet: torch.nn.Module | None = None
) -> FeatureSource:
    """The features ``settings.backbone`` names on ``device``: an ImageNet-trained
    EfficientNet-Lite's at ``settings.backbone_size`` (ddad.maps.backbone.seen_size), or the
    trained ``unet``'s (``unet``, which must then be given, prepared on ``device``)."""
    if reads_unet(settings):
        if unet is None:
            raise ValueError("score.backbone unet reads the trained UNet's features; pass it")
        return FeatureSource(lambda images: unet_features(unet, images), device, reads_unet=True)
    net = load_backbone(settings.backbone).to(device)
    if device.type == "cpu":  # a rank may have one thread (ddad.diffusion.threads)
        same_kernels_on_any_thread_count(net)

    def extract(images: torch.Tensor) -> torch.Tensor:
        size = seen_size(settings.backbone_size, images.shape[-2:])
        return backbone_features(
            net, images, size, settings.backbone_pooling, settings.backbone_strides
        )

    return FeatureSource(extract, device)


def describe_source(settings: ScoreSettings) -> str:
    """Whose features a map reads, as one pass of it."""
    if reads_unet(settings):
        return "partial UNet pass"
    return f"{settings.backbone} pass (backbone_size {settings.backbone_size})"


def unet_features(
    model: torch.nn.Module, images: torch.Tensor, blocks: Sequence[int] = FEATURE_BLOCKS
) -> torch.Tensor:
    """Patch features [N, D, H/2, W/2] of ``images`` [N, C, H, W] in [-1, 1], at t = 0.

    ``blocks`` index ``model.input_blocks`` (a guided-diffusion UNet's); each block's output is
    averaged over a 3x3 neighbourhood and resized to half the image size, then the blocks are
    stacked. The UNet runs only up to the last of them: the rest of the pass (most of it: the
    middle and the whole decoder) would be thrown away.
    """
    if not blocks:
        raise ValueError("unet_features needs at least one block")
    captured: dict[int, torch.Tensor] = {}
    t = torch.zeros(len(images), dtype=torch.long, device=images.device)
    with torch.no_grad():
        emb = model.time_embed(timestep_embedding(t, model.model_channels))
        h = images.type(model.dtype)
        for index, block in enumerate(model.input_blocks[: max(blocks) + 1]):
            h = block(h, emb)
            if index in blocks:
                captured[index] = h
    size = (images.shape[-2] // 2, images.shape[-1] // 2)
    pooled = [
        F.avg_pool2d(captured[b].float(), _NEIGHBOURHOOD, 1, _NEIGHBOURHOOD // 2) for b in blocks
    ]
    return torch.cat(
        [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled], 1
    )
