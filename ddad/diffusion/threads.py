"""Results that come out the same bytes on any number of torch threads.

Reconstruct and score give the same bytes with any number of ranks
(ddad.diffusion.distributed), and each rank computes on its share of the node's cores: one
process on all of them, two ranks on half each. These steps that ddad's passes take on the CPU
round by the thread count (each found by re-running every torch operation of a score on other
thread counts), and each is kept out of the numbers, here or where it occurs:

- MKL splits its work by threads, and the split changes the rounding, in LAPACK (an inverse,
  a Cholesky factor) and in a product over a long inner dimension (a covariance summed over
  every position): ``one_thread`` runs such a step on one thread everywhere.
- On one thread torch convolves a 1x1 kernel on fewer than 16 images with its own kernel
  instead of oneDNN's, which rounds otherwise, and MKL's product of a few rows (a linear
  layer's) rounds otherwise on two threads: ``same_kernels_on_any_thread_count``.
- On one thread torch resizes three channels bilinearly with another kernel:
  ddad.maps.backbone resizes one channel at a time.
- A batched product whose first operand is a permuted view rounds otherwise on two threads than
  on one: ddad.maps.position_gaussian lays it out row by row first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DILATION = 2  # any dilation but 1: what makes torch choose oneDNN for a 1x1 convolution


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch (and MKL under it) on one thread for the duration, on as many as before after:
    for a step whose result would otherwise depend on the thread count, small next to the
    network passes around it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def same_kernels_on_any_thread_count(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (changed in place) with a dilation on each 1x1, stride-1 convolution and its
    plain linear layers computed on one thread. For inference on the CPU (a GPU picks its
    kernels without regard to threads).

    A dilation spaces a kernel's taps and a 1x1 kernel has one, so the arithmetic is the same;
    but torch then convolves it with oneDNN on any thread count, as it does on several threads
    already, where on one thread and fewer than 16 images it takes its own kernel, which rounds
    otherwise. A linear layer is a product of MKL's, which on two threads rounds otherwise for
    a few rows (a UNet's time embedding of a small last batch); it is small next to the
    convolutions, so one thread costs little.
    """
    for module in model.modules():
        if _pointwise(module):
            module.dilation = (DILATION,) * len(module.kernel_size)
        elif type(module) is torch.nn.Linear:
            module.__class__ = LinearOnOneThread
    return model


class LinearOnOneThread(torch.nn.Linear):
    """A linear layer computed on one thread (``same_kernels_on_any_thread_count``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with one_thread():
            return super().forward(x)


def _pointwise(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a plain 1x1 (or 1) convolution with stride 1."""
    return (
        isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d))
        and set(module.kernel_size) == {1}
        and set(module.stride) == {1}
    )
