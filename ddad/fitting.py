"""Batches that shrink until they fit: out of memory, a chunk is retried at half size.

How many samples fit in one UNet pass depends on the model, the image size, the precision and
what else holds the GPU, so ``reconstruct.batch_size: auto`` starts large and lets the first
out-of-memory error find the size (on the CPU too: the middle block's attention grows with the
square of an image's positions, and 64 samples of a 256 x 640 image asked for 50 GB at once).
Results never depend on batch composition (each image has its own noise generator), so a halved
batch gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from ddad.errors import DdadError

Item = TypeVar("Item")
Result = TypeVar("Result")

AUTO_SAMPLES = {"cuda": 256, "cpu": 64}  # samples per UNet pass that ``auto`` starts from


def samples_per_pass(batch_size: int | str, device: torch.device) -> int:
    """``batch_size`` as a number: itself, or for ``auto`` where the device's search starts."""
    if batch_size == "auto":
        return AUTO_SAMPLES.get(device.type, AUTO_SAMPLES["cpu"])
    return int(batch_size)


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
