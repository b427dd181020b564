"""Train a diffusion UNet on good images only.

Noise levels are drawn from the range the model will be used at (``t_range``), which a small
model on a CPU budget needs: it has no capacity to spare for t near 1000. Random crops let a
fully convolutional model learn from native-resolution detail at a fraction of the cost, and
flips multiply the data where the category's look allows it.

On CUDA the forward and backward passes run under bfloat16 autocast (no loss scaling needed);
the weights, the optimizer and the EMA stay float32. A learned-variance model (the OpenAI
preset) is trained with guided-diffusion's hybrid loss, the noise MSE plus the variational
bound term for the variance, as OpenAI trained it (their rescaled MSE equals it at 1000 steps).

Training can stop and go on bit for bit (``Resume``): its state is everything one step hands
the next (weights, EMA, optimizer, schedule, loss curve, every random stream), saved every
minute or so and when SIGINT or SIGTERM asks it to stop, which it does between two steps. A
saved state is for the training whose ``training_fingerprint`` it was saved with.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from torch.nn.parallel import DistributedDataParallel

from ddad.diffusion import distributed
from ddad.progress import progress_bar

FLIPS = ("hflip", "vflip")  # train.flips: mirror left-right, top-bottom


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run (params.yaml ``train``, the same defaults). ``val_images`` good
    images are held out of it (by the train stage) for validation and the detect threshold."""

    steps: int = 250
    batch_size: int = 16
    lr: float = 1e-3
    ema: float = 0.995
    t_range: tuple[int, int] = (0, 500)
    crop: int = 32
    flips: tuple[str, ...] = ()
    val_images: int = 8
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
    for flip, dim in zip(FLIPS, (-1, -2), strict=True):
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


@dataclass(frozen=True)
class Resume:
    """Stopping and going on: start from ``state`` (one ``save`` was handed; None: step 0), hand
    the state to ``save`` (rank 0's writer; None on the other ranks) at most every ``every_s``
    seconds, at least ten times as long as the last save took (a large model's state takes a
    while to write), and when a signal stops training."""

    state: dict[str, Any] | None = None
    save: Callable[[dict[str, Any]], None] | None = None
    every_s: float = 60.0


@dataclass
class _Training:
    """What one step hands the next."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    log: TrainLog = field(default_factory=TrainLog)
    step: int = 0
    running: float | None = None

    def state(self) -> dict[str, Any]:
        """The state to save (live tensors: write them before the next step)."""
        return {
            "step": self.step,
            "running": self.running,
            "train": list(self.log.train),
            "validation": list(self.log.validation),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": _rng_states(self.generator),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go on from a saved ``state`` (before DDP wraps the model, which copies rank 0's)."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.log = TrainLog(list(state["train"]), list(state["validation"]))
        self.step, self.running = state["step"], state["running"]
        _set_rng_states(self.generator, state["rng"])


def _rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream training may draw from: the batches' generator, torch's own on the
    CPU and CUDA (dropout), numpy's and Python's (an augmentation's), as plain values that a
    weights-only load reads back."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {
        "batches": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": numpy_state,
        "python": random.getstate(),
    }


def _set_rng_states(generator: torch.Generator, states: dict[str, Any]) -> None:
    generator.set_state(states["batches"])
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = copy.deepcopy(states["numpy"])
    numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    random.setstate(states["python"])


def training_fingerprint(
    model: torch.nn.Module,
    images: torch.Tensor,
    validation: torch.Tensor | None,
    config: TrainConfig,
    device: torch.device,
    ranks: int,
) -> str:
    """A digest of everything that decides each step of a training: the starting weights, the
    images as the model sees them, the knobs, the device kind, the number of ranks sharing the
    batch, torch and this module's code. A saved state resumes only the training with its
    digest; any other starts at step 0."""
    digest = hashlib.sha256()
    setup = [asdict(config), device.type, ranks, torch.__version__]
    digest.update(json.dumps(setup).encode() + Path(__file__).read_bytes())
    tensors = dict(model.state_dict()) | {"images": images}
    if validation is not None:
        tensors["validation"] = validation
    for name, tensor in tensors.items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Catch SIGINT and SIGTERM (the launcher's way of stopping a rank) into the yielded list,
    so training stops between two steps, where its state is whole, instead of inside one; a
    second signal acts at once. Outside the main thread Python allows no handlers."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous: dict[int, Any] = {}

    def ask(signum: int, _frame: object) -> None:
        received.append(signum)
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, ask) or signal.SIG_DFL
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def train_diffusion(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    config: TrainConfig,
    validation: torch.Tensor | None = None,
    progress: bool = True,
    on_log: Callable[[TrainLog], None] | None = None,
    device: torch.device | None = None,
    resume: Resume | None = None,
) -> tuple[torch.nn.Module, TrainLog]:
    """Train on ``images`` ([N, C, H, W] in [-1, 1], on the CPU) on ``device`` (default the
    CPU); return the EMA model (on ``device``) and the loss log. Each batch is drawn on the CPU
    with the seeded generator, so a device changes the arithmetic, not the draws. The
    ``validation`` curve is the loss on its ``validation_crops``.

    In a process group (ddad.diffusion.distributed) ``config.batch_size`` is the global batch:
    every rank draws the same batch and passes its slice through DistributedDataParallel, whose
    averaged gradients are the global batch's, so W ranks follow one process up to float
    rounding.

    With ``resume``, training starts from its state and saves its own (``Resume``); SIGINT or
    SIGTERM then ends it after the current step, on every rank, with KeyboardInterrupt once
    the state is saved. Where it stops or how often it saves does not change the result.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(config.seed)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    run = _Training(
        model,
        copy.deepcopy(model).eval().requires_grad_(False),
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _warmup_cosine(step, config.steps)
        ),
        torch.Generator().manual_seed(config.seed),
    )
    resume = resume or Resume(every_s=math.inf)
    if resume.state is not None:
        run.restore(resume.state)
    ranks = distributed.world_size()
    mine = torch.tensor_split(torch.arange(config.batch_size), ranks)[distributed.rank()]
    trained = model if ranks == 1 else DistributedDataParallel(model)
    if validation is not None:
        validation = validation_crops(validation, config.crop, config.seed)
    steps = range(run.step, config.steps)
    bar = progress_bar(
        steps, desc="train", disable=not progress, unit="step", initial=run.step, total=config.steps
    )
    saved_at, interval = time.monotonic(), resume.every_s
    with _stop_requests() as stop:
        for step in bar:
            loss = _one_step(run, trained, diffusion, images, config, device, mine)
            value = distributed.average_across_ranks(loss)
            run.running = value if run.running is None else 0.9 * run.running + 0.1 * value
            run.step = step + 1
            bar.set_postfix(loss=f"{run.running:.4f}", refresh=False)
            _log(run, diffusion, config, validation, on_log)
            stopping = distributed.any_rank(bool(stop)) and run.step < config.steps
            due = time.monotonic() - saved_at >= interval and run.step < config.steps
            if resume.save and (stopping or due):
                began = time.monotonic()
                resume.save(run.state())
                saved_at = time.monotonic()
                interval = max(resume.every_s, 10 * (saved_at - began))
            if stopping:
                raise KeyboardInterrupt
    return run.ema, run.log


def _one_step(
    run: _Training,
    trained: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    mine: torch.Tensor,
) -> float:
    """One optimizer and EMA step on the next batch; its loss on this rank."""
    model, ranks = run.model, distributed.world_size()
    model.train()
    idx = torch.randint(0, len(images), (config.batch_size,), generator=run.generator)
    batch = _augment(images[idx], config, run.generator)
    low, high = config.t_range
    t = torch.randint(low, high + 1, (len(batch),), generator=run.generator)
    noise = torch.randn(batch.shape, generator=run.generator)
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
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    run.optimizer.step()
    run.schedule.step()
    _update_ema(run.ema, model, min(config.ema, (1 + run.step) / (10 + run.step)))
    return loss.item()


def _log(
    run: _Training,
    diffusion: GaussianDiffusion,
    config: TrainConfig,
    validation: torch.Tensor | None,
    on_log: Callable[[TrainLog], None] | None,
) -> None:
    """Add the step's point to the loss curve every ``log_every`` steps and at the last, and a
    validation point every ten of them."""
    last = run.step == config.steps
    if run.step % config.log_every and not last:
        return
    run.log.train.append((run.step, run.running))
    if validation is not None and (last or run.step % (config.log_every * 10) == 0):
        loss = validation_loss(run.ema, diffusion, validation, config.t_range)
        run.log.validation.append((run.step, loss))
    if on_log:
        on_log(run.log)


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
