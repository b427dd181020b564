"""Batch images through the reconstruction sampler, loading the next batch while the UNet runs.

Shared by the reconstruct stage and by ``ddad detect``: several images and all their ensemble
members go through one forward pass; on CUDA the UNet runs in half precision, channels-last,
and a batch that runs out of memory is halved (ddad.diffusion.fitting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion

from ddad.diffusion.fitting import in_fitting_chunks, samples_for
from ddad.diffusion.reconstruct import Plan, reconstruct
from ddad.diffusion.threads import same_kernels_on_any_thread_count
from ddad.errors import DdadError
from ddad.progress import progress_bar


@dataclass(frozen=True)
class Reconstruction:
    """One image's input and reconstructions (model range), with its UNet passes; no
    reconstructions (None, no passes) when no plan asked for them. Wall time is not part of a
    result: results are stored and hashed by DVC, and must be the same bytes on every run."""

    key: str
    image: np.ndarray
    reconstructions: np.ndarray | None
    timesteps: np.ndarray | None
    nfe: float


DEVICES = ("auto", "cpu", "cuda")  # what params.yaml ``device`` and ``--device`` accept


def resolve_device(wanted: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error."""
    if isinstance(wanted, torch.device):
        return wanted
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DdadError("device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to ``device`` in eval mode; channels-last on CUDA (faster convolutions there); on
    the CPU with the same kernels on any thread count (a rank may have one: threads.py)."""
    model = model.to(device).eval()
    if device.type == "cuda":
        return model.to(memory_format=torch.channels_last)
    return same_kernels_on_any_thread_count(model)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _free_memory(device: torch.device) -> Callable[[], None]:
    """What gives memory back before a smaller batch is tried."""
    return torch.cuda.empty_cache if device.type == "cuda" else lambda: None


def _loaded(
    items: Sequence[tuple[str, Callable[[], np.ndarray]]], desc: str, progress: bool
) -> Iterator[Reconstruction]:
    """Each item's input alone, at no cost: what a caller with no plan gets (the feature map
    reads nothing else)."""
    for key, load in progress_bar(items, desc=desc, unit="img", disable=not progress):
        yield Reconstruction(key, load(), None, None, 0.0)


def run(
    model: torch.nn.Module | None,
    diffusion: GaussianDiffusion | None,
    items: Sequence[tuple[str, Callable[[], np.ndarray]]],
    plan: Plan | None,
    *,
    seed: int = 0,
    batch_size: int | str = 64,
    device: torch.device | None = None,
    progress: bool = True,
    desc: str = "reconstruct",
    share: Callable[[list], list] = list,
) -> Iterator[Reconstruction]:
    """Yield one :class:`Reconstruction` per ``(key, load)`` item, in order.

    ``batch_size`` counts samples per UNet pass (images x ensemble members), or is ``auto``
    (ddad.diffusion.fitting.samples_for, capped on the CPU by the attention the first image's size
    needs); at least one image goes in each batch, and fewer when a batch runs out of memory.
    ``load()`` returns the image as [C, H, W] float32 in [-1, 1]. With no ``plan``
    (for a map that reads the input alone, ddad.maps.kinds) each image is only
    loaded, and ``model`` and ``diffusion`` may be None.
    ``share`` picks the batches this process runs (ddad.diffusion.distributed.share for one rank of
    several): the batches are cut as for one process, so each holds the same images.
    """
    if plan is None:
        yield from _loaded(share(list(items)), desc, progress)
        return
    if model is None or diffusion is None:
        raise ValueError("a plan needs the model and its diffusion")
    device = device or next(model.parameters()).device
    # only auto reads the first image, for the size every item shares
    height, width = items[0][1]().shape[-2:] if batch_size == "auto" and items else (0, 0)
    samples = samples_for(model, batch_size, device, height, width)
    per_batch = max(1, samples // plan.ensemble)
    fitted = per_batch
    batches = share([items[i : i + per_batch] for i in range(0, len(items), per_batch)])
    total = sum(len(batch) for batch in batches)
    bar = progress_bar(total=total, desc=desc, unit="img", disable=not progress)

    def load(batch: Sequence[tuple[str, Callable[[], np.ndarray]]]) -> np.ndarray:
        return np.stack([loader() for _, loader in batch])

    def reconstructed(
        chunk: Sequence[tuple[np.ndarray, str]],
    ) -> tuple[np.ndarray, torch.Tensor, int]:
        x = torch.from_numpy(np.stack([image for image, _ in chunk])).to(device)
        with _autocast(device):
            recon, t, passes = reconstruct(model, diffusion, x, [k for _, k in chunk], plan, seed)
        return recon.float().cpu().numpy(), t, passes

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for index, batch in enumerate(batches):
            images = pending.result()
            if index + 1 < len(batches):
                pending = pool.submit(load, batches[index + 1])
            keys = [key for key, _ in batch]
            chunks, fitted = in_fitting_chunks(
                reconstructed, list(zip(images, keys, strict=True)), fitted, _free_memory(device)
            )
            recon = np.concatenate([chunk[0] for chunk in chunks])
            t = torch.cat([chunk[1] for chunk in chunks])
            passes = sum(chunk[2] for chunk in chunks)
            for i, key in enumerate(keys):
                yield Reconstruction(key, images[i], recon[i], t[i].numpy(), passes / len(batch))
            bar.update(len(batch))
    bar.close()
