"""One prepared measurement for a lent GPU: ``scripts/gpu_check.sh`` runs this module.

On a machine with nothing downloaded it writes one JSON with: UNet passes per second and peak
memory of the 256 model (random weights of OpenAI's architecture) at batch 1, 8 and 32 in
float16, bfloat16 and float32; the default and the seed procedure's NFE and seconds per image
(the seed extrapolated from a share of its passes, as ``ddad bench`` does) with the projected
wall time of MVTec AD's 1,725 test images, and the same for DDAD's map (``score.map: ddad``
with the EfficientNet-Lite0 backbone); and the wall time of ``dvc repro`` of the synthetic
default in a throw-away copy of the project. Each section is written as soon as it is done, so
a check cut short keeps what it measured. ``--quick`` swaps in the tiny preset and a tiny
project, to try the whole check on a CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ddad.diffusion import passes
from ddad.diffusion.engine import DEVICES, resolve_device
from ddad.diffusion.models import build_diffusion, build_model, with_random_outputs
from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.maps.scoring import ScoreSettings
from ddad.tools import bench

MVTEC_TEST_IMAGES = 1725
# DDAD's way with the 256 model zero-shot: reconstruct, then compare in ImageNet features
DDAD_MAP = ScoreSettings(map="ddad", backbone="efficientnet-lite0")
# what git tracks of the pipeline; data/own/ is every fetch_data stage's dependency
PROJECT_FILES = ("dvc.yaml", "params.yaml", "ddad", "stages", "data/own/README.md")


@dataclass(frozen=True)
class Scale:
    """What the check runs: the model, the batches, and how much of each procedure."""

    preset: str
    image_size: int
    batches: tuple[int, ...]
    repeats: int  # timed calls per row of the pass table
    images: int
    seed_share: float
    repro_params: dict[str, Any]
    repro_timeout: float


FULL = Scale("openai-256-uncond", 256, (1, 8, 32), 3, 8, 0.005, {}, 360)
QUICK = Scale(
    "tiny",
    32,
    (1, 8, 32),
    1,
    4,
    0.002,
    {
        "data": {
            "categories": ["stripes"],
            "image_size": 16,
            "synthetic": {"seed": 0, "train": 12, "test_good": 4, "test_defect": 6},
        },
        "train": {"steps": 2, "batch_size": 4, "crop": 0, "val_images": 2},
        "reconstruct": {"ensemble": 1, "steps": 2},
    },
    120,
)


def measure_passes(
    model: torch.nn.Module, scale: Scale, device: torch.device
) -> list[dict[str, Any]]:
    """The pass table of ``model`` on ``device``, in the memory layout ddad.diffusion.engine
    uses there."""
    model = model.to(device).eval()
    images = torch.from_numpy(bench.random_images(1, 3, scale.image_size)).to(device)
    layouts = (device.type == "cuda",)
    precisions = passes.fast_precisions(device)
    rows = passes.pass_table(model, images, scale.batches, precisions, layouts, scale.repeats)
    print(passes.format_table(rows), flush=True)
    return rows


def measure_procedures(
    model: torch.nn.Module, scale: Scale, device: torch.device, score: ScoreSettings
) -> dict[str, Any]:
    """The default (maps made as ``score`` says) and the seed procedure on ``model``, with
    MVTec wall-time projections."""
    diffusion = build_diffusion(scale.preset)
    images = bench.random_images(scale.images, 3, scale.image_size)
    report = bench.benchmark(
        bench.Workload(model, diffusion, images, device),
        bench.Procedure(Plan(), "auto", score),
        seed_share=scale.seed_share,
    )
    report |= {
        "preset": scale.preset,
        "channels": 3,
        "image_size": scale.image_size,
        "image_source": "random images in [-1, 1] (random weights)",
    }
    print(bench.format_report(report), flush=True)
    for name in ("seed", "default"):
        seconds = report[name]["seconds_per_image"]
        report[name]["mvtec_test_seconds"] = seconds * MVTEC_TEST_IMAGES
    return report


def throwaway_project(source: Path, folder: Path, changes: dict[str, Any], device: str) -> None:
    """A git + DVC project at ``folder`` with the pipeline of ``source`` and changed params."""
    for name in PROJECT_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, folder / name, ignore=shutil.ignore_patterns("__py*"))
        else:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, folder / name)
    params = yaml.safe_load((source / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] = params[section] | values if isinstance(values, dict) else values
    params["device"] = device
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=folder, check=True)


def measure_repro(scale: Scale, device: torch.device, source: Path) -> dict[str, Any]:
    """Wall time of ``dvc repro`` of the synthetic default (the scale's params) on ``device``."""
    with tempfile.TemporaryDirectory(prefix="ddad-gpu-check-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        throwaway_project(source, project, scale.repro_params, device.type)
        env = os.environ | {"DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(project)}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "dvc", "repro"],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=scale.repro_timeout,
            )
        except subprocess.TimeoutExpired:
            return {"finished": False, "seconds": scale.repro_timeout, "timed_out": True}
        seconds = time.perf_counter() - start
        metrics = project / "metrics" / "metrics.json"
        result = {"finished": done.returncode == 0, "seconds": seconds, "timed_out": False}
        if done.returncode:
            result["stderr_tail"] = done.stderr[-2000:]
        if metrics.is_file():
            result["metrics"] = json.loads(metrics.read_text())["mean"]
        return result


def describe_device(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} torch threads"


def check(scale: Scale, device: torch.device, out: Path, source: Path) -> dict[str, Any]:
    """Run every section, rewriting ``out`` after each; return the whole record."""
    record: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "preset": scale.preset,
        "image_size": scale.image_size,
        "passes_per_second_definition": "samples (images) through one UNet call, per second",
    }
    start = time.perf_counter()
    model = with_random_outputs(build_model(scale.preset, 3, scale.image_size))
    # dvc repro first, before this process holds any GPU memory: its stages then have it all
    # (on an H200 they ran out of memory behind the 256 model's cached blocks)
    sections = (
        ("dvc_repro", lambda: measure_repro(scale, device, source)),
        ("device", lambda: describe_device(device)),
        ("passes", lambda: measure_passes(model, scale, device)),
        ("procedures", lambda: measure_procedures(model, scale, device, ScoreSettings())),
        ("ddad_map", lambda: measure_procedures(model, scale, device, DDAD_MAP)),
    )
    for name, measure in sections:
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        record[name] = measure()
        record["seconds"] = time.perf_counter() - start
        record["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny preset and project (CPU try)")
    parser.add_argument("--out", type=Path, help="JSON path (default gpu_check/<time>.json)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except DdadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{stamp}-{device.type}{'-quick' if args.quick else ''}.json"
    out = args.out or Path("gpu_check") / name
    check(QUICK if args.quick else FULL, device, out.resolve(), Path.cwd())
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
