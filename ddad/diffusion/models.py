"""Diffusion model presets and checkpoints.

A preset names a UNet architecture and its noise schedule. ``openai-256-uncond`` is OpenAI's
256x256 unconditional guided-diffusion model (the seed's model); the small presets are what a
CPU can train in minutes. Checkpoints are loaded with ``weights_only=True`` because a checkpoint
is a pickle and a pickle from a URL could run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from guided_diffusion.script_util import create_gaussian_diffusion
from guided_diffusion.unet import UNetModel

from ddad.data.imageio import Size, sides
from ddad.errors import DdadError

OPENAI_256_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
)
OPENAI_256_FILE = "256x256_diffusion_uncond.pt"
OPENAI_256_MISSPELT_FILE = "256x256x_diffusion_uncond.pt"
OPENAI_256_PARAMETERS = 552_814_086


@dataclass(frozen=True)
class Preset:
    """A UNet architecture and noise schedule; ``image_size`` None means any multiple of 8."""

    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_head_channels: int
    learn_sigma: bool
    resblock_updown: bool
    noise_schedule: str = "linear"
    image_size: int | None = None
    pretrained: bool = False
    checkpoint_when_training: bool = False  # recompute activations in backward (memory)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_head_channels=32,
        learn_sigma=False,
        resblock_updown=False,
    ),
    "small": Preset(
        model_channels=64,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(8,),
        num_head_channels=32,
        learn_sigma=False,
        resblock_updown=False,
    ),
    "openai-256-uncond": Preset(
        model_channels=256,
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_head_channels=64,
        learn_sigma=True,
        resblock_updown=True,
        image_size=256,
        pretrained=True,
        checkpoint_when_training=True,
    ),
}


def downsampling(name: str) -> int:
    """How many times the preset's UNet halves each side: every side it sees (the image size,
    a training crop) must be a multiple of this, or a skip connection's halves do not meet."""
    return 2 ** (len(PRESETS[name].channel_mult) - 1)


def size_needs(name: str, image_size: Size) -> str | None:
    """What the preset ``name`` needs of the model size that ``image_size`` lacks, in words, or
    None when it fits; the one rule behind ``check_preset`` and the params check."""
    preset = PRESETS[name]
    if preset.image_size is not None and sides(image_size) != sides(preset.image_size):
        return f"image_size {preset.image_size}"
    levels = downsampling(name)
    if any(side % levels for side in sides(image_size)):
        return f"multiples of {levels} on each side"
    return None


def check_preset(name: str, image_size: Size) -> Preset:
    """Return the preset, or say in one line why it cannot run at ``image_size`` (one side, or
    [height, width])."""
    if name not in PRESETS:
        raise DdadError(f"model.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    needs = size_needs(name, image_size)
    if needs:
        raise DdadError(f"data.image_size: {name} needs {needs}, got {image_size}")
    return PRESETS[name]


def build_model(
    name: str, channels: int, image_size: Size, for_training: bool = False
) -> UNetModel:
    """Build the preset's UNet for ``channels``-channel images (random weights); ``for_training``
    turns on guided-diffusion's gradient checkpointing where the preset asks for it (the 256
    model's activations for a batch would not fit otherwise). The weights' names and shapes do
    not change, so a checkpoint loads either way."""
    preset = check_preset(name, image_size)
    side = min(sides(image_size))  # attention sits at the same downsampling on either side
    return UNetModel(
        image_size=side,
        in_channels=channels,
        model_channels=preset.model_channels,
        out_channels=channels * (2 if preset.learn_sigma else 1),
        num_res_blocks=preset.num_res_blocks,
        attention_resolutions=tuple(side // r for r in preset.attention_resolutions),
        dropout=0.0,
        channel_mult=preset.channel_mult,
        num_head_channels=preset.num_head_channels,
        use_scale_shift_norm=True,
        resblock_updown=preset.resblock_updown,
        use_checkpoint=for_training and preset.checkpoint_when_training,
    )


def with_random_outputs(model: UNetModel, seed: int = 0) -> UNetModel:
    """``model`` with every all-zero parameter filled with small seeded noise, in place.

    guided-diffusion starts the output layer and every residual branch at zero, so a fresh
    model outputs zeros whatever its input and precision: timing it is fair, but comparing two
    precisions' outputs would show no difference at all.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(0.02 * noise)
    return model


def build_diffusion(name: str) -> GaussianDiffusion:
    """The preset's 1000-step diffusion process (epsilon prediction, no respacing)."""
    preset = PRESETS[name]
    return create_gaussian_diffusion(
        steps=1000, learn_sigma=preset.learn_sigma, noise_schedule=preset.noise_schedule
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Write the weights as a plain state dict (the format OpenAI's checkpoint has), atomically."""
    save_atomically(model.state_dict(), path)


def save_atomically(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a kill while writing leaves the file
    that was there before, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without running any code from the file."""
    if not path.is_file():
        raise DdadError(f"{path}: checkpoint not found; run `dvc repro` to make it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DdadError(f"{path}: not a loadable weights-only checkpoint ({reason})") from None
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    raise DdadError(f"{path}: expected a state dict of tensors, found {type(payload).__name__}")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load ``state`` into ``model``; a mismatch names the keys in one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_shorten(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_shorten(unexpected)}")
        raise DdadError(f"{source}: checkpoint does not fit the model: {'; '.join(parts)}")
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        key = wrong[0]
        raise DdadError(
            f"{source}: checkpoint does not fit the model: {key} has shape "
            f"{tuple(state[key].shape)}, the model needs {tuple(own[key].shape)}"
        )
    model.load_state_dict(state, strict=True)


def _shorten(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def find_openai_checkpoint(models_dir: Path) -> Path | None:
    """The OpenAI checkpoint if the user already placed it (also under the seed's misspelt name)."""
    for name in (OPENAI_256_FILE, OPENAI_256_MISSPELT_FILE):
        if (models_dir / name).is_file():
            return models_dir / name
    return None


def trained_meta(folder: Path) -> dict:
    """What a train stage wrote beside its model (``meta.json``: preset, channels, size, held-out
    images), read without the weights for work that needs no UNet pass."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DdadError(f"{folder}: no trained model here; run `dvc repro` to train it")
    return json.loads(meta_path.read_text())


def load_trained(folder: Path) -> tuple[UNetModel, GaussianDiffusion, dict]:
    """The model a train stage wrote (``model.pt`` + ``meta.json``), its diffusion and metadata."""
    meta = trained_meta(folder)
    model = build_model(meta["preset"], meta["channels"], meta["image_size"])
    load_weights(model, read_checkpoint(folder / "model.pt"), folder / "model.pt")
    return model, build_diffusion(meta["preset"]), meta
