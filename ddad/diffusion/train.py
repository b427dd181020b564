"""Train a diffusion UNet on good images only.

Noise levels are drawn from the range the model will be used at (``t_range``), which a small
model on a CPU budget needs: it has no capacity to spare for t near 1000. Random crops let a
fully convolutional model learn from native-resolution detail at a fraction of the cost, and
flips multiply the data where the category's look allows it.

On CUDA the forward and backward passes run under bfloat16 autocast (no loss scaling needed);
the weights, the optimizer and the EMA stay float32. A learned-variance model (the OpenAI
preset) is trained with guided-diffusion's hybrid loss, the noise MSE plus the variational
bound term for the variance, as OpenAI trained it (their rescaled MSE equals it at 1000 steps).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from torch.nn.parallel import DistributedDataParallel

from ddad.diffusion import distributed
from ddad.progress import progress_bar


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run (see params.yaml ``train``)."""

    steps: int
    batch_size: int = 16
    lr: float = 1e-3
    ema: float = 0.995
    t_range: tuple[int, int] = (0, 999)
    crop: int = 0
    flips: tuple[str, ...] = ()
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainLog:
    """Loss curve (step, train loss) and validation points (step, validation loss)."""

    train: list[tuple[int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)


def _augment(batch: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    if config.crop and config.crop < min(batch.shape[-2:]):
        h, w = batch.shape[-2:]
        top = int(torch.randint(0, h - config.crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - config.crop + 1, (1,), generator=generator))
        batch = batch[..., top : top + config.crop, left : left + config.crop]
    for flip, dim in (("hflip", -1), ("vflip", -2)):
        if flip in config.flips:
            mask = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(mask.view(-1, 1, 1, 1), batch.flip(dim), batch)
    return batch


def validation_crops(
    images: torch.Tensor, crop: int, seed: int = 0, per_image: int = 4
) -> torch.Tensor:
    """``per_image`` fixed crops of each held-out image [N, C, H, W], at the size training sees.

    The loss on crops is what training minimises, and it is cheap: a whole-image pass costs
    the square of the image's positions in the UNet's middle attention (here 4.75 s for a
    256 x 640 image against 0.63 s at 128 x 320), and each point of the validation curve
    takes 4 passes per held-out image. ``crop`` 0, or at least a side, keeps the whole
    images. The same crops at every point, so the curve moves only with the model.
    """
    height, width = images.shape[-2:]
    if not crop or crop >= min(height, width):
        return images
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, height - crop + 1, (per_image,), generator=generator).tolist()
    lefts = torch.randint(0, width - crop + 1, (per_image,), generator=generator).tolist()
    return torch.cat(
        [
            images[..., top : top + crop, left : left + crop]
            for top, left in zip(tops, lefts, strict=True)
        ]
    )


def _mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def validation_loss(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    t_range: tuple[int, int],
    seed: int = 0,
) -> float:
    """Mean denoising loss on held-out images at fixed noise levels and fixed noise."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(t_range[0], t_range[1], 4).long()
    losses = []
    model.eval()
    with torch.no_grad(), _mixed_precision(device):
        for t in levels:
            noise = torch.randn(images.shape, generator=generator).to(device)
            t_batch = torch.full((len(images),), int(t), dtype=torch.long, device=device)
            out = diffusion.training_losses(model, images.to(device), t_batch, noise=noise)
            losses.append(out["loss"].mean().item())
    return sum(losses) / len(losses)


def train_diffusion(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    config: TrainConfig,
    validation: torch.Tensor | None = None,
    progress: bool = True,
    on_log: Callable[[TrainLog], None] | None = None,
    device: torch.device | None = None,
) -> tuple[torch.nn.Module, TrainLog]:
    """Train on ``images`` ([N, C, H, W] in [-1, 1], on the CPU) on ``device`` (default the
    CPU); return the EMA model (on ``device``) and the loss log. Each batch is drawn on the CPU
    with the seeded generator, so a device changes the arithmetic, not the draws. The
    ``validation`` curve is the loss on its ``validation_crops``.

    In a process group (ddad.diffusion.distributed) ``config.batch_size`` is the global batch:
    every rank draws the same batch and passes its slice through DistributedDataParallel, whose
    averaged gradients are the global batch's, so W ranks follow one process up to float
    rounding.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    ranks = distributed.world_size()
    mine = torch.tensor_split(torch.arange(config.batch_size), ranks)[distributed.rank()]
    trained = model if ranks == 1 else DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, config.steps)
    )
    log = TrainLog()
    low, high = config.t_range
    if validation is not None:
        validation = validation_crops(validation, config.crop, config.seed)
    bar = progress_bar(range(config.steps), desc="train", disable=not progress, unit="step")
    running = None
    for step in bar:
        model.train()
        idx = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        batch = _augment(images[idx], config, generator)
        t = torch.randint(low, high + 1, (len(batch),), generator=generator)
        noise = torch.randn(batch.shape, generator=generator)
        if ranks > 1:
            batch, t, noise = batch[mine], t[mine], noise[mine]
        with _mixed_precision(device):
            losses = diffusion.training_losses(
                trained, batch.to(device), t.to(device), noise=noise.to(device)
            )
        # DDP averages the ranks' gradients: each rank's sum over the global batch size, times
        # the ranks, averages to the global batch's mean even when slices differ in size
        per_sample = losses["loss"].float()
        loss = per_sample.mean() if ranks == 1 else per_sample.sum() * ranks / config.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        _update_ema(ema, model, min(config.ema, (1 + step) / (10 + step)))
        value = distributed.average_across_ranks(loss.item())
        running = value if running is None else 0.9 * running + 0.1 * value
        bar.set_postfix(loss=f"{running:.4f}", refresh=False)
        last = step + 1 == config.steps
        if (step + 1) % config.log_every == 0 or last:
            log.train.append((step + 1, running))
            if validation is not None and (last or (step + 1) % (config.log_every * 10) == 0):
                log.validation.append(
                    (step + 1, validation_loss(ema, diffusion, validation, config.t_range))
                )
            if on_log:
                on_log(log)
    return ema, log


def _warmup_cosine(step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source, 1 - decay)
    for target, source in zip(ema.buffers(), model.buffers(), strict=True):
        target.copy_(source)
