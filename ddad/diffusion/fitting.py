"""Batches that shrink until they fit: out of memory, a chunk is retried at half size.

How many samples fit in one UNet pass depends on the model, the image size, the precision and
what else holds the GPU, so ``reconstruct.batch_size: auto`` starts large and lets the first
out-of-memory error find the size. On the CPU it first caps the start by the attention the
image size needs (it grows with the square of an image's positions: 64 samples of a 256 x 640
image asked for 50 GB): a batch the allocator grants may still outgrow the machine later, and
then the kernel kills the process, past any retry. Results never depend on batch composition
(each image has its own noise generator), so a halved batch gives the same numbers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from ddad.errors import DdadError

Item = TypeVar("Item")
Result = TypeVar("Result")

AUTO_SAMPLES = {"cuda": 256, "cpu": 64}  # samples per UNet pass that ``auto`` starts from
CPU_MEMORY_SHARE = 0.5  # of the available memory, what the CPU's attention may take


def samples_per_pass(batch_size: int | str, device: torch.device, bytes_per_sample: int = 0) -> int:
    """``batch_size`` as a number: itself, or for ``auto`` where the device's search starts.

    On the CPU, ``auto`` starts no higher than ``CPU_MEMORY_SHARE`` of the available memory
    holds at ``bytes_per_sample`` each (:func:`attention_bytes`; 0: not known, no cap).
    """
    if batch_size != "auto":
        return int(batch_size)
    start = AUTO_SAMPLES.get(device.type, AUTO_SAMPLES["cpu"])
    if device.type == "cpu" and bytes_per_sample > 0:
        budget = int(available_memory() * CPU_MEMORY_SHARE)
        start = max(1, min(start, budget // bytes_per_sample))
    return start


def samples_for(
    model: torch.nn.Module, batch_size: int | str, device: torch.device, height: int, width: int
) -> int:
    """:func:`samples_per_pass` for ``model`` at ``height`` x ``width``: ``auto`` on the CPU
    capped by what that size's attention needs. The one start the engine, ``ddad bench`` and
    its scaling check share."""
    return samples_per_pass(batch_size, device, attention_bytes(model, height, width))


def attention_bytes(model: torch.nn.Module, height: int, width: int) -> int:
    """Bytes of one sample's largest attention in a float32 pass of a guided-diffusion UNet at
    ``height`` x ``width``: its weights and their softmax, [heads, n, n] each for n positions at
    that block's scale. They, not the convolutions, decide what fits at large sizes (the tiny
    preset's middle block at 256 x 640: 10240 positions, 1.7 GB a sample). 0 for a model
    without a UNet's attributes.
    """
    mults = getattr(model, "channel_mult", None)
    if mults is None:
        return 0
    scales = {
        2**level: mult
        for level, mult in enumerate(mults)
        if 2**level in model.attention_resolutions
    }
    scales[2 ** (len(mults) - 1)] = mults[-1]  # the middle block always attends
    largest = 0
    for ds, mult in scales.items():
        channels = model.model_channels * mult
        heads = (
            channels // model.num_head_channels if model.num_head_channels > 0 else model.num_heads
        )
        positions = (height // ds) * (width // ds)
        largest = max(largest, 2 * heads * positions**2 * 4)
    return largest


def available_memory() -> int:
    """Bytes the kernel can hand out now (Linux's MemAvailable), else all of physical memory."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: CUDA's own error type, or the
    RuntimeError of torch's CPU allocator, which has no type of its own."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def in_fitting_chunks(
    work: Callable[[Sequence[Item]], Result],
    items: Sequence[Item],
    size: int,
    free_memory: Callable[[], None] = lambda: None,
) -> tuple[list[Result], int]:
    """``work`` over consecutive chunks of at most ``size`` items, in order.

    A chunk that runs out of memory is retried at half the size (``free_memory`` runs first),
    and later chunks keep the smaller size. Returns the results and the size that fitted, for
    the next call. One item that does not fit is an error that says what to lower.
    """
    results: list[Result] = []
    start = 0
    while start < len(items):
        chunk = items[start : start + size]
        try:
            results.append(work(chunk))
        except RuntimeError as error:  # torch.OutOfMemoryError is one too
            if not is_out_of_memory(error):
                raise
            if size == 1:
                raise DdadError(
                    "out of memory with one image per UNet pass; lower "
                    "reconstruct.ensemble or data.image_size (or, on a GPU, use device: cpu)"
                ) from None
        else:
            start += len(chunk)
            continue
        size = max(1, size // 2)
        free_memory()
    return results, size
