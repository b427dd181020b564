"""Images per second of the reconstruction engine with 1 and with N processes, measured.

The N processes are started by torch's own launcher (ddad.diffusion.distributed, as the stages
are) and share the batches the way the reconstruct stage does; each rank times its share between two
barriers, so the figure is the group's wall time, without the launcher's start-up. The batches
are cut so that every process gets work (at most ceil(images / N) images each), the same cut
for 1 and N processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion

from ddad.diffusion import distributed
from ddad.diffusion.engine import prepare_model, run
from ddad.diffusion.reconstruct import Plan


@dataclass(frozen=True)
class Workload:
    """What every process reconstructs: the model, the images and how."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    images: np.ndarray
    plan: Plan
    samples_per_batch: int
    device_type: str


def _seconds(work: Workload) -> float:
    """Wall seconds of this process's share, between barriers (all ranks start together)."""
    device = torch.device(work.device_type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    model = prepare_model(work.model, device)
    items = [(f"scaling/{i}", lambda i=i: work.images[i]) for i in range(len(work.images))]
    common = {"batch_size": work.samples_per_batch, "device": device, "progress": False}
    list(run(model, work.diffusion, items[:1], work.plan, **common))  # warm-up, untimed
    distributed.barrier()
    start = time.perf_counter()
    list(run(model, work.diffusion, items, work.plan, share=distributed.share, **common))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    distributed.barrier()
    return time.perf_counter() - start


def _rank_seconds(work: Workload) -> float:
    """One launched rank: join the group, time the share."""
    with distributed.process_group(torch.device(work.device_type)):
        return _seconds(work)


def images_per_second(work: Workload, processes: int) -> float:
    """The workload's throughput with ``processes`` processes on this machine."""
    if processes == 1:
        return len(work.images) / _seconds(work)
    seconds = distributed.launch(
        distributed.Launch(nproc_per_node=processes),
        _rank_seconds,
        [work],
        "the bench keeps nothing; run it again",
    )
    return len(work.images) / max(seconds.values())


def scaling_workload(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: np.ndarray,
    plan: Plan,
    samples_per_batch: int,
    device: torch.device,
    processes: int,
) -> Workload:
    """The workload cut so each of ``processes`` gets at least one batch."""
    per_process = math.ceil(len(images) / processes) * plan.ensemble
    return Workload(
        model.cpu(), diffusion, images, plan, min(samples_per_batch, per_process), device.type
    )


def measure(work: Workload, processes: int) -> dict[str, float | int | str]:
    """Images per second with 1 and with ``processes`` processes, and what was timed."""
    one = images_per_second(work, 1)
    many = images_per_second(work, processes)
    return {
        "images": len(work.images),
        "samples_per_batch": work.samples_per_batch,
        "processes": processes,
        "backend": "nccl" if work.device_type == "cuda" else "gloo",
        "images_per_second_1": one,
        f"images_per_second_{processes}": many,
        "speedup": many / one,
    }


def format_scaling(row: dict[str, float | int | str]) -> str:
    """The bench's scaling line."""
    n = row["processes"]
    return (
        f"scaling: reconstruct of {row['images']} images in batches of "
        f"{row['samples_per_batch']} samples, {row['backend']}, torch's launcher: "
        f"1 process {row['images_per_second_1']:.4g} images/s, {n} processes "
        f"{row[f'images_per_second_{n}']:.4g} images/s ({row['speedup']:.2f}x)"
    )
