"""How much faster the current procedure is than the seed's, on one model and machine.

The seed reconstructed every image 16 times, one member after another at batch 1, each member
a ~250-step ancestral DDPM chain from a jittered t, started one step late: about 4,000 UNet
passes per image. The procedure timed against it is params.yaml's: its map kind
(ddad.maps.kinds) with what it costs. The default spends one pass of a pretrained backbone per
image on its features, then a nearest-patch search over the good bank, and no UNet pass; a map
that compares with reconstructions batches images and members through a short DDIM chain first.
Timing the seed in full takes long, so only a share of its passes may be run: seconds per UNet
pass at batch 1 are measured and scaled linearly to its full NFE, and the report says so.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from torch.utils.flop_counter import FlopCounterMode

from ddad.data.imageio import Size, sides
from ddad.data.layout import test_images
from ddad.data.preprocess import model_input
from ddad.diffusion.engine import prepare_model, run
from ddad.diffusion.feature_denoiser import DenoiserShape
from ddad.diffusion.fitting import samples_for
from ddad.diffusion.reconstruct import Plan, reconstruct
from ddad.maps.denoiser import TrainedDenoiser, untrained
from ddad.maps.kinds import MapInput, MapKind, kind_class, map_kind
from ddad.maps.scoring import DEFAULT_SCORE, ScoreSettings
from ddad.maps.sources import FeatureSource, feature_source


@dataclass(frozen=True)
class Workload:
    """What both procedures are timed on: the same model, diffusion, images [N, C, H, W] in
    [-1, 1] and device, so their ratio compares procedures and nothing else."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    images: np.ndarray
    device: torch.device


@dataclass(frozen=True)
class Procedure:
    """The procedure timed against the seed's, as the pipeline would run it: its reconstruction
    ``plan`` (run only for the maps that compare with one), samples per UNet pass
    (``reconstruct.batch_size``), how its maps are made and the feature denoiser's size (an
    untrained one is timed: it costs what a trained one does)."""

    plan: Plan
    batch_size: int | str = "auto"
    score: ScoreSettings = DEFAULT_SCORE
    denoiser: DenoiserShape = DenoiserShape()


SEED_PLAN = Plan(timesteps=250, sampler="ddpm", ensemble=16, jitter=0.1, off_by_one=True)
ONE_MEMBER = {"sampler": "ddpm", "ensemble": 1, "off_by_one": True}
WARMUP_PASSES = 3
PEAK_SECONDS = 1.0


def expected_nfe(plan: Plan) -> float:
    """UNet passes per image the plan costs on average over its jittered start steps."""
    if plan.jitter <= 0:
        return float(plan.ensemble * plan.nfe(plan.timesteps))
    starts = range(int((1 - plan.jitter) * plan.timesteps), int((1 + plan.jitter) * plan.timesteps))
    return plan.ensemble * float(np.mean([plan.nfe(t) for t in starts]))


def pass_budget(total_passes: float, share: float) -> int:
    """Passes to time for a ``share`` of ``total_passes``: at least one, all when share >= 1."""
    return max(1, math.ceil(min(share, 1.0) * total_passes))


def extrapolate(seconds: float, passes_timed: int, passes_total: float) -> float:
    """Seconds for ``passes_total`` passes, assuming each costs what the timed ones did."""
    return seconds * passes_total / passes_timed


def procedure_summary(
    seconds_per_image: float,
    nfe_per_image: float,
    flops_per_image: float,
    peak_flops: float,
    backbone_passes_per_image: float = 0.0,
    denoiser_passes_per_image: float = 0.0,
) -> dict[str, float]:
    """Throughput and achieved FLOP/s of one procedure from its cost per image (UNet passes,
    partial ones included, a pretrained backbone's and the feature denoiser's passes)."""
    achieved = flops_per_image / seconds_per_image
    return {
        "nfe_per_image": nfe_per_image,
        "backbone_passes_per_image": backbone_passes_per_image,
        "denoiser_passes_per_image": denoiser_passes_per_image,
        "seconds_per_image": seconds_per_image,
        "images_per_second": 1.0 / seconds_per_image,
        "flops_per_image": flops_per_image,
        "achieved_flops": achieved,
        "peak_flops": peak_flops,
        "peak_fraction": achieved / peak_flops,
    }


def format_report(report: dict[str, Any]) -> str:
    """The bench report as text: what was timed, how, and a table of both procedures."""
    seed, default = report["seed"], report["default"]
    memory = report["peak_memory_bytes"] or {}
    size = report["image_size"]
    engine = (
        f"batch {report['batch_size']} samples "
        f"(ddad.diffusion.engine{', float16 autocast' if report['device'] == 'cuda' else ''}), "
        if report["batch_size"]
        else ""
    )
    lines = [
        f"bench: {report['preset']}, {report['channels']} channel(s), {size}x{size}, "
        f"{report['images']} {report['image_source']}, device {report['device']}",
        f"peak:    {_si(default['peak_flops'])}FLOP/s ({report['peak_dtype']} matmul, measured)",
        f"seed:    {report['seed_plan']}, one member at a time at batch 1, float32",
        f"default: {report['default_plan']}, {engine}{report['default_map']}",
    ]
    if seed["extrapolated"]:
        lines.append(
            f"seed timing EXTRAPOLATED: {seed['passes_timed']:,} of {seed['passes_total']:,.0f} "
            f"UNet passes timed (share {seed['share']:.3g}), scaled linearly to the full NFE"
        )
    header = [
        "procedure",
        "UNet passes/image",
        "backbone passes/image",
        "denoiser passes/image",
        "s/image",
        "images/s",
        "speed-up",
        "FLOP/s",
        "of peak",
    ]
    rows = [header + (["peak memory"] if memory else [])]
    for name, speedup in (("seed", 1.0), ("default", report["speedup"])):
        row = report[name]
        rows.append(
            [
                name,
                f"{row['nfe_per_image']:.1f}",
                f"{row['backbone_passes_per_image']:.1f}",
                f"{row['denoiser_passes_per_image']:.1f}",
                f"{row['seconds_per_image']:.4g}",
                f"{row['images_per_second']:.4g}",
                f"{speedup:.1f}x",
                _si(row["achieved_flops"]),
                f"{100 * row['peak_fraction']:.2g}%",
            ]
            + ([f"{memory[name] / 2**20:.0f} MiB"] if memory else [])
        )
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    table = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines + [""] + table)


def random_images(count: int, channels: int, size: Size, seed: int = 0) -> np.ndarray:
    """``count`` float32 images [C, H, W] of uniform noise in [-1, 1] (content costs nothing)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, channels, *sides(size))).astype(np.float32)


def category_images(
    root: Path, category: str, count: int, channels: int, size: Size, **preprocessing: str
) -> np.ndarray:
    """The first ``count`` test images of a category as the model sees them (fewer if short)."""
    paths = [item.path for item in test_images(root, category)[:count]]
    return np.stack([model_input(p, channels, size, **preprocessing) for p in paths])


def _si(value: float) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g} "


def flops_per_pass(model: torch.nn.Module, image: torch.Tensor) -> int:
    """FLOPs of one UNet forward on one sample (``image`` is [1, C, H, W] on the model's device)."""
    t = torch.zeros(1, dtype=torch.long, device=image.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, t)
    return counter.get_total_flops()


def flops_per_feature_pass(source: FeatureSource, image: np.ndarray) -> int:
    """FLOPs of one pass of a map's feature ``source`` (a pretrained backbone's or a partial
    UNet pass, ddad.maps.sources.feature_source) on one [C, H, W] sample."""
    with FlopCounterMode(display=False) as counter:
        source([image])
    return counter.get_total_flops()


def flops_per_denoiser_pass(
    denoiser: TrainedDenoiser | None, source: FeatureSource | None, image: np.ndarray
) -> int:
    """FLOPs of one feature-denoiser pass over the features ``source`` makes of one [C, H, W]
    sample (0 without a denoiser)."""
    if denoiser is None or source is None:
        return 0
    return flops_per_pass(denoiser.model, source([image]))


def matmul_peak(device: torch.device, seconds: float = PEAK_SECONDS) -> tuple[float, str]:
    """Measured FLOP/s of a large square matmul (float16 on CUDA, float32 else), and the dtype."""
    size, dtype = (8192, torch.float16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        _sync(device)
    return 2 * size**3 * count / (time.perf_counter() - start), str(dtype).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measured(device: torch.device, work: Callable[[], int]) -> tuple[float, int, int | None]:
    """(seconds, UNet passes, peak CUDA memory or None) of ``work()``, which returns its passes."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    passes = work()
    _sync(device)
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, passes, memory


def _seed_members(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    budget: int,
    seed: int,
) -> int:
    """Run seed members (each alone, at batch 1, own key) until ``budget`` passes are spent.

    A member that would overrun the budget runs a shorter ddpm chain of exactly the passes
    left: a UNet pass costs the same at any t, so the time per pass is unchanged.
    """
    member = replace(SEED_PLAN, ensemble=1)
    longest = member.nfe(int((1 + SEED_PLAN.jitter) * SEED_PLAN.timesteps) - 1)
    passes = 0
    for index, m in itertools.product(range(len(images)), range(SEED_PLAN.ensemble)):
        left = budget - passes
        if left <= 0:
            break
        plan = member if left >= longest else Plan(left, **ONE_MEMBER)
        key = f"bench/{index}/member{m}"
        passes += reconstruct(model, diffusion, images[index : index + 1], [key], plan, seed)[2]
    return passes


def time_seed(work: Workload, share: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Time the seed procedure (float32, batch 1) on ``work``'s images, or a share of it."""
    diffusion, images, device = work.diffusion, work.images, work.device
    model = work.model.to(device).eval()
    x = torch.from_numpy(images).to(device)
    warmup = Plan(WARMUP_PASSES, **ONE_MEMBER)
    reconstruct(model, diffusion, x[:1], ["bench/warmup"], warmup, seed)
    total = len(images) * expected_nfe(SEED_PLAN)
    extrapolated = share < 1
    budget = pass_budget(total, share) if extrapolated else math.inf
    seconds, passes, memory = _measured(
        device, lambda: _seed_members(model, diffusion, x, budget, seed)
    )
    nfe = expected_nfe(SEED_PLAN) if extrapolated else passes / len(images)
    return {
        "seconds_per_image": extrapolate(seconds, passes, nfe),
        "nfe_per_image": nfe,
        "extrapolated": extrapolated,
        "share": passes / total if extrapolated else 1.0,
        "passes_timed": passes,
        "passes_total": total,
        "peak_memory": memory,
    }


def _mapped(
    work: Workload, kind: MapKind, plan: Plan | None, batch_size: int, count: int, seed: int
) -> int:
    """Map the first ``count`` of ``work``'s images as the pipeline would (reconstructed by
    ddad.diffusion.engine.run with ``plan`` first, when the kind compares; ``work.model``
    prepared), finish every map, and return the UNet passes the reconstructions took."""
    images = work.images[:count]
    if plan is None:
        inputs, passes = [MapInput(image) for image in images], 0
    else:
        items = [(f"bench/{i}", lambda i=i: images[i]) for i in range(len(images))]
        results = list(
            run(
                work.model,
                work.diffusion,
                items,
                plan,
                seed=seed,
                batch_size=batch_size,
                device=work.device,
                progress=False,
            )
        )
        inputs = [MapInput(r.image, r.reconstructions) for r in results]
        passes = sum(r.nfe for r in results)
    for raw in kind.raw_maps(inputs):
        kind.finish(raw)
    return passes


def time_default(work: Workload, procedure: Procedure, seed: int = 0) -> dict[str, Any]:
    """Time ``procedure`` as the pipeline runs it: its map kind (ddad.maps.kinds), having
    learnt from a reference shaped like the real one, over ``work``'s images, with the
    reconstructions its plan makes when the kind compares with them. Returns seconds and full
    UNet passes per image, peak memory, the samples per pass that ran (``auto`` resolved), the
    map's own passes (``MapKind.cost``) and the FLOPs of one feature pass (0 for a map that
    reads no features)."""
    plan, score, device = procedure.plan, procedure.score, work.device
    work = replace(work, model=prepare_model(work.model, device))
    denoiser = None
    if kind_class(score.map).needs_denoiser(score):
        channels = feature_source(score, device)([work.images[0]]).shape[1]
        denoiser = untrained(channels, procedure.denoiser)
    kind = map_kind(score, device, work.model, denoiser)
    reconstructed = kind.reconstruction_plan(plan)
    batch_size = samples_for(work.model, procedure.batch_size, device, *work.images.shape[-2:])
    if kind.learns_from_good_images:
        kind.fit_for_timing(work.images)
    warm = replace(reconstructed, sampler="one_step") if reconstructed else None
    _mapped(work, kind, warm, batch_size, max(1, batch_size // plan.ensemble), seed)
    seconds, passes, memory = _measured(
        device, partial(_mapped, work, kind, reconstructed, batch_size, len(work.images), seed)
    )
    source = kind.source
    return {
        "seconds_per_image": seconds / len(work.images),
        "nfe_per_image": passes / len(work.images),
        "peak_memory": memory,
        "batch_size": batch_size if reconstructed else None,
        "map_cost": kind.cost(plan.ensemble),
        "map": kind.describe(),
        "plan": reconstructed,
        "flops_per_feature_pass": flops_per_feature_pass(source, work.images[0]) if source else 0,
        "flops_per_denoiser_pass": flops_per_denoiser_pass(denoiser, source, work.images[0]),
    }


def benchmark(
    work: Workload,
    procedure: Procedure,
    *,
    seed_share: float = 1.0,
    peak_seconds: float = PEAK_SECONDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the seed procedure and ``procedure`` on the same ``work``.

    Returns the report ``format_report`` prints and ``ddad bench --json`` writes (the caller adds
    what describes the model and images).
    """
    images, device = work.images, work.device
    seed_run = time_seed(work, seed_share, seed)
    default_run = time_default(work, procedure, seed)
    flops = flops_per_pass(work.model, torch.from_numpy(images[:1]).to(device))
    map_cost = default_run["map_cost"]
    feature_flops = default_run["flops_per_feature_pass"]
    feature_passes = map_cost.unet_passes + map_cost.backbone_passes
    denoiser_flops = map_cost.denoiser_passes * default_run["flops_per_denoiser_pass"]
    peak, peak_dtype = matmul_peak(device, peak_seconds)
    summaries = {
        "seed": procedure_summary(
            seed_run["seconds_per_image"],
            seed_run["nfe_per_image"],
            seed_run["nfe_per_image"] * flops,
            peak,
        ),
        "default": procedure_summary(
            default_run["seconds_per_image"],
            default_run["nfe_per_image"] + map_cost.unet_passes,
            default_run["nfe_per_image"] * flops + feature_passes * feature_flops + denoiser_flops,
            peak,
            map_cost.backbone_passes,
            map_cost.denoiser_passes,
        ),
    }
    seed_keys = ("extrapolated", "share", "passes_timed", "passes_total")
    memory = {"seed": seed_run["peak_memory"], "default": default_run["peak_memory"]}
    return {
        "seed": summaries["seed"] | {k: seed_run[k] for k in seed_keys},
        "default": summaries["default"],
        "speedup": seed_run["seconds_per_image"] / default_run["seconds_per_image"],
        "device": device.type,
        "peak_dtype": peak_dtype,
        "peak_memory_bytes": memory if device.type == "cuda" else None,
        "seed_plan": describe_plan(SEED_PLAN),
        "default_plan": describe_plan(default_run["plan"]),
        "default_map": default_run["map"],
        "batch_size": default_run["batch_size"],
        "images": len(images),
        "flops_per_pass": flops,
        "flops_per_feature_pass": feature_flops,
    }


def describe_plan(plan: Plan | None) -> str:
    """A plan in a few words, as the bench prints it (None: no reconstruction, for a map kind
    that reads the input alone)."""
    if plan is None:
        return "no reconstruction (the map reads the input alone)"
    extras = [f"jitter {plan.jitter:g}"] if plan.jitter else []
    extras += ["off by one"] if plan.off_by_one and plan.sampler == "ddpm" else []
    extras += [f"conditioning {plan.conditioning:g}"] if plan.conditioning else []
    tail = f" ({', '.join(extras)})" if extras else ""
    plural = "s" if plan.steps != 1 else ""
    how = {"ddim": f"ddim {plan.steps} step{plural}", "one_step": "one-pass x0 estimate"}
    sampler = how.get(plan.sampler, plan.sampler)
    return f"{sampler} from t={plan.timesteps}{tail}, ensemble {plan.ensemble}"
