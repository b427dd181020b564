"""How much faster the current procedure is than the seed's, on one model and machine.

The seed reconstructed every image 16 times, one member after another at batch 1, each member
a ~250-step ancestral DDPM chain from a jittered t, started one step late: about 4,000 UNet
passes per image. The current default (the feature map) spends one partial UNet pass per image
on its features, then a nearest-neighbour search; with the reconstruction-error map it batches
images and members through a short DDIM chain.
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
from ddad.diffusion.fitting import samples_for
from ddad.diffusion.reconstruct import Plan, plan_for_map, reconstruct
from ddad.maps.comparison import compared_map
from ddad.maps.features import (
    FeatureSource,
    GoodReference,
    feature_anomaly_maps,
    feature_passes,
    feature_source,
    searched_as,
    unet_passes,
)
from ddad.maps.scoring import DEFAULT_SCORE, ScoreSettings, finished


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
    (``reconstruct.batch_size``) and how its maps are made."""

    plan: Plan
    batch_size: int | str = "auto"
    score: ScoreSettings = DEFAULT_SCORE


SEED_PLAN = Plan(timesteps=250, sampler="ddpm", ensemble=16, jitter=0.1, off_by_one=True)
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
    seconds_per_image: float, nfe_per_image: float, flops_per_image: float, peak_flops: float
) -> dict[str, float]:
    """Throughput and achieved FLOP/s of one procedure from its cost per image."""
    achieved = flops_per_image / seconds_per_image
    return {
        "nfe_per_image": nfe_per_image,
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
    header = ["procedure", "NFE/image", "s/image", "images/s", "speed-up", "FLOP/s", "of peak"]
    rows = [header + (["peak memory"] if memory else [])]
    for name, speedup in (("seed", 1.0), ("default", report["speedup"])):
        row = report[name]
        rows.append(
            [
                name,
                f"{row['nfe_per_image']:.1f}",
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
    """FLOPs of one pass of the maps' feature ``source`` (a partial UNet pass or a pretrained
    backbone's, ddad.maps.features.feature_source) on one [C, H, W] sample."""
    with FlopCounterMode(display=False) as counter:
        source([image])
    return counter.get_total_flops()


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
        plan = member if left >= longest else Plan(left, sampler="ddpm", off_by_one=True)
        key = f"bench/{index}/member{m}"
        passes += reconstruct(model, diffusion, images[index : index + 1], [key], plan, seed)[2]
    return passes


def time_seed(work: Workload, share: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Time the seed procedure (float32, batch 1) on ``work``'s images, or a share of it."""
    diffusion, images, device = work.diffusion, work.images, work.device
    model = work.model.to(device).eval()
    x = torch.from_numpy(images).to(device)
    warmup = Plan(WARMUP_PASSES, sampler="ddpm", off_by_one=True)
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


def timing_reference(
    source: FeatureSource, images: np.ndarray, score: ScoreSettings
) -> GoodReference:
    """A reference shaped like ``score``'s, from ``images`` repeated as needed: a bank of
    ``score.bank_images`` feature maps (``search_radius`` >= 0, or per-position Gaussians of
    them for ``feature_model: gaussian``) or of ``score.bank_vectors``
    rows (-1), a typical map of ones when ``score.reference_images`` asks for one, and
    a whitening when ``score.whiten`` asks for one.

    The search and the division cost what the real ones cost; what the bank and map hold does
    not change the time, so no training images are needed.
    """
    maps = source(list(images))
    if score.search_radius >= 0 or score.feature_model == "gaussian":
        count = score.bank_images
    else:
        count = math.ceil(score.bank_vectors / maps[0, 0].numel())
    bank = maps.repeat(math.ceil(count / len(maps)), 1, 1, 1)[:count]
    typical = np.ones(images.shape[-2:]) if score.reference_images else None
    return replace(searched_as([bank], score), typical=typical)


def time_default(work: Workload, procedure: Procedure, seed: int = 0) -> dict[str, Any]:
    """Time ``procedure`` as the pipeline runs it: ddad.diffusion.engine.run with its plan and
    batch size for the maps that compare with a reconstruction (then DDAD's
    feature comparison for ``ddad``), or the feature map alone (one feature pass per image, no
    reconstruction). Returns seconds and full UNet passes per image, peak memory, the
    samples per pass that ran (``auto`` resolved) and the FLOPs of one feature pass (0 when
    the map reads no features)."""
    diffusion, images, device = work.diffusion, work.images, work.device
    plan, batch_size, score = procedure.plan, procedure.batch_size, procedure.score
    reconstructed = plan_for_map(plan, score.map)
    batch_size = samples_for(work.model, batch_size, device, *images.shape[-2:])
    model = prepare_model(work.model, device)
    source = feature_source(model, score)
    reference = timing_reference(source, images, score) if reconstructed is None else None
    items = [(f"bench/{i}", lambda i=i: images[i]) for i in range(len(images))]

    def passes_of(chosen: list, with_plan: Plan) -> float:
        results = run(
            model,
            diffusion,
            chosen,
            with_plan,
            seed=seed,
            batch_size=batch_size,
            device=device,
            progress=False,
        )
        passes = 0.0
        for r in results:
            passes += r.nfe
            if score.map == "ddad":
                finished(compared_map(source, r.image, r.reconstructions, score), score)
        return passes

    def mapped(chosen: np.ndarray) -> int:
        amaps = feature_anomaly_maps(
            source, list(chosen), reference, score.sigma, score.kernel_size
        )
        for amap in amaps:
            finished(amap, score, reference.typical)
        return 0

    if reconstructed is None:
        mapped(images[:1])
        work = partial(mapped, images)
    else:
        passes_of(items[: max(1, batch_size // plan.ensemble)], replace(plan, sampler="one_step"))
        work = partial(passes_of, items, reconstructed)
    seconds, passes, memory = _measured(device, work)
    feature_pass = feature_passes(score, plan.ensemble) > 0
    return {
        "seconds_per_image": seconds / len(images),
        "nfe_per_image": passes / len(images),
        "peak_memory": memory,
        "batch_size": batch_size,
        "flops_per_feature_pass": flops_per_feature_pass(source, images[0]) if feature_pass else 0,
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
    plan, score = procedure.plan, procedure.score
    seed_run = time_seed(work, seed_share, seed)
    default_run = time_default(work, procedure, seed)
    flops = flops_per_pass(work.model, torch.from_numpy(images[:1]).to(device))
    extra = feature_passes(score, plan.ensemble)
    feature_flops = default_run["flops_per_feature_pass"]
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
            default_run["nfe_per_image"] + unet_passes(score, plan.ensemble),
            default_run["nfe_per_image"] * flops + extra * feature_flops,
            peak,
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
        "default_plan": describe_plan(plan_for_map(plan, score.map)),
        "default_map": describe_map(score),
        "batch_size": default_run["batch_size"] if score.map != "features" else None,
        "images": len(images),
        "flops_per_pass": flops,
        "flops_per_feature_pass": feature_flops,
    }


def describe_plan(plan: Plan | None) -> str:
    """A plan in a few words, as the bench prints it (None: ``plan_for_map``'s for the
    feature map)."""
    if plan is None:
        return "no reconstruction (the feature map reads the input alone)"
    extras = [f"jitter {plan.jitter:g}"] if plan.jitter else []
    extras += ["off by one"] if plan.off_by_one and plan.sampler == "ddpm" else []
    extras += [f"conditioning {plan.conditioning:g}"] if plan.conditioning else []
    tail = f" ({', '.join(extras)})" if extras else ""
    plural = "s" if plan.steps != 1 else ""
    how = {"ddim": f"ddim {plan.steps} step{plural}", "one_step": "one-pass x0 estimate"}
    sampler = how.get(plan.sampler, plan.sampler)
    return f"{sampler} from t={plan.timesteps}{tail}, ensemble {plan.ensemble}"


def describe_map(score: ScoreSettings) -> str:
    """The default's anomaly map in a few words, as the bench prints it."""
    eyes = describe_source(score)
    if score.map == "ddad":
        return f"DDAD's map (pixel + {score.feature_weight:g} x feature distance, {eyes} per image)"
    if score.map != "features":
        return "reconstruction-error map"
    typical = ", over the typical map" if score.reference_images else ""
    if score.feature_model == "gaussian":
        return (
            f"feature map (1 {eyes}, Mahalanobis distance to the good features' "
            f"Gaussian at each position, from {score.bank_images} good images{typical})"
        )
    if score.search_radius >= 0:
        where = f"within {score.search_radius} cells in {score.bank_images} good images"
    else:
        where = f"of {score.bank_vectors:,} patches"
    space = "whitened features" if score.whiten else "features"
    return f"feature map (1 {eyes}, nearest in {space} {where}{typical})"


def describe_source(score: ScoreSettings) -> str:
    """Whose features a map reads, as one pass of it."""
    if score.backbone == "unet":
        return "partial UNet pass"
    return f"{score.backbone} pass (backbone_size {score.backbone_size})"
