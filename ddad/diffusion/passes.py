"""How fast one UNet pass runs in each precision, memory layout and batch size, and how far its
output moves from float32's.

The bench asks this to choose how the engine runs the model on a device (keep a faster setting
only when its output agrees with float32's within a stated tolerance); the GPU check asks it for
passes per second and peak memory at the batch sizes a GPU run would use.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

PRECISIONS = ("float32", "bfloat16", "float16")
AGREEMENT = 0.05  # max |output - float32 output| a faster setting may differ by (outputs ~N(0,1))


def fast_precisions(device: torch.device) -> tuple[str, ...]:
    """float32 first (the reference), then the half precisions worth timing on ``device``.

    A CPU has no fast float16, and bfloat16 only with its own instructions (AVX-512 BF16,
    AMX): without them oneDNN emulates it, and one pass of the tiny model took 6-80x float32's
    time on this project's AVX2 CPU, half an hour or more for the 256 model.
    """
    if device.type == "cuda":
        return PRECISIONS
    return ("float32", "bfloat16") if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ("float32",)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(
    model: torch.nn.Module,
    images: torch.Tensor,
    precision: str = "float32",
    channels_last: bool = False,
    repeats: int = 1,
) -> tuple[float, torch.Tensor, int | None]:
    """(seconds per call, float32 output, peak CUDA memory or None) of ``model`` on ``images``
    [B, C, H, W] at t = 250. On CUDA one untimed call first warms the kernels up; a CPU has
    nothing to warm, and one pass of the 256 model there takes half a minute."""
    device = images.device
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = images.contiguous(memory_format=layout)
    t = torch.full((len(images),), 250, dtype=torch.long, device=device)
    with torch.no_grad(), _autocast(device, precision):
        if device.type == "cuda":
            model(x, t)
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            output = model(x, t)
        _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, output.float(), memory


def pass_table(
    model: torch.nn.Module,
    images: torch.Tensor,
    batches: tuple[int, ...] = (1,),
    precisions: tuple[str, ...] = PRECISIONS,
    layouts: tuple[bool, ...] = (False,),
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """One row per batch size, precision and layout (channels-last or not): seconds per call,
    UNet passes (samples) per second, peak CUDA memory, and the max absolute difference of the
    output from float32's in the standard layout at the same batch (the first row of each batch
    when ``precisions`` starts with float32 and ``layouts`` with False, as by default)."""
    rows = []
    for batch in batches:
        x = images[:1].repeat(batch, 1, 1, 1)
        reference = None
        for precision in precisions:
            for channels_last in layouts:
                seconds, output, memory = time_pass(model, x, precision, channels_last, repeats)
                reference = output if reference is None else reference
                rows.append(
                    {
                        "batch": batch,
                        "precision": precision,
                        "channels_last": channels_last,
                        "seconds_per_call": seconds,
                        "passes_per_second": batch / seconds,
                        "peak_memory_bytes": memory,
                        "max_abs_difference": float((output - reference).abs().max()),
                    }
                )
        model.to(memory_format=torch.contiguous_format)
    return rows


def fastest_agreeing(rows: list[dict[str, Any]], tolerance: float = AGREEMENT) -> dict[str, Any]:
    """The fastest row whose output stays within ``tolerance`` of float32's."""
    agreeing = [row for row in rows if row["max_abs_difference"] <= tolerance]
    return max(agreeing, key=lambda row: row["passes_per_second"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text, one line each."""
    lines = ["batch  precision  layout         s/call  passes/s  max |diff|  peak memory"]
    for row in rows:
        memory = row["peak_memory_bytes"]
        lines.append(
            f"{row['batch']:>5}  {row['precision']:<9}  "
            f"{'channels-last' if row['channels_last'] else 'standard':<13}  "
            f"{row['seconds_per_call']:>6.4g}  {row['passes_per_second']:>8.4g}  "
            f"{row['max_abs_difference']:>10.3g}  "
            + (f"{memory / 2**20:>8.0f} MiB" if memory is not None else "           -")
        )
    return "\n".join(lines)
