"""The ``ddad`` command: ``bench`` (seed vs current speed), ``detect`` (inspect images) and
``baseline`` (the per-pixel z-score baseline's image AUROC, pixel AUROC, AUPRO and lit shares).

Settings the pipeline also uses (reconstruction plan, scoring, preprocessing, device) are read
from params.yaml in the current folder when it is there, so ``ddad detect`` scores images the
way the pipeline scored the images its threshold comes from. Every bad value, from a flag or
from params.yaml, stops the command with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from ddad import __version__
from ddad.data.imageio import Size, is_image_file, read_image, sides
from ddad.data.layout import DATA_DIR, TRAINED_DIR, list_categories, test_images
from ddad.detect import Detector, overlay_names, save_overlay
from ddad.diffusion import passes
from ddad.diffusion.engine import DEVICES, resolve_device
from ddad.diffusion.fitting import samples_for
from ddad.diffusion.models import (
    PRESETS,
    build_diffusion,
    build_model,
    check_preset,
    load_trained,
    with_random_outputs,
)
from ddad.diffusion.reconstruct import SAMPLERS
from ddad.errors import DdadError
from ddad.evaluation.baseline import zscore_report
from ddad.maps.good_images import training_split
from ddad.params import (
    AUTO,
    PARAMS_FILE,
    input_size,
    parse_params,
    plan_from,
    protocol_from,
    score_settings,
    setting,
    train_config,
)
from ddad.tools import bench, scaling

DETECT_OUT = Path("detections")


DESCRIPTION = (
    "Visual anomaly detection with denoising diffusion models: inspect images with a trained "
    "model (detect), time reconstruction (bench), or score a simple baseline (baseline). "
    "Settings the pipeline also uses come from params.yaml in the current folder when it is there."
)
DEVICE_HELP = "auto (CUDA when present), cpu or cuda; default: params.yaml's device, else auto"
DETECT_ABOUT = (
    "Score each IMAGE with a trained model and call it DEFECT when its score is above the "
    "threshold, else OK: one line per image, and a heat-map overlay of each written to --out, at "
    "the image's own size with its verdict, score and threshold on it. Unless --threshold or "
    "--good-dir sets it, the threshold is the highest score of the held-out good images in "
    "runs/<category>/score/scores.csv under the current folder (written by `dvc repro`), else "
    "that of the held-out good images the model's meta.json lists, scored now. Reconstruction "
    "and scoring follow params.yaml, as the pipeline did; run `dvc repro` after changing it."
)


def _from_params(key: str) -> str:
    return f"default: params.yaml's {key}, else the pipeline's default"


class _UsageError(Exception):
    """A bad command line, reported like any other user error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message.removeprefix("argument "))


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    span = f"in {low}..{high}" if high is not None else f">= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {text!r}")
        return value

    return parse


def _number(
    low: float = -math.inf, high: float = math.inf, open_low: bool = False
) -> Callable[[str], float]:
    span = "a finite number"
    if math.isfinite(low) and math.isfinite(high):
        span = f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"
    elif math.isfinite(low):
        span = f"a number {'>' if open_low else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = low < value if open_low else low <= value
        if not (math.isfinite(value) and inside and value <= high):
            raise argparse.ArgumentTypeError(f"must be {span}, got {text!r}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)}, got {text!r}")
        return text

    return parse


def _read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a dict; empty when the command runs outside a ddad project."""
    return parse_params(path.read_text(), path) if path.is_file() else {}


def _batch_size(params: dict[str, Any], flag: int | None) -> int | str:
    return flag or setting(params, "reconstruct.batch_size", 64)


def _device(params: dict[str, Any], flag: str | None) -> torch.device:
    return resolve_device(flag or setting(params, "device", "auto"))


def resolve_model_dir(value: str, trained_dir: Path = TRAINED_DIR) -> Path:
    """``--model``: a folder holding meta.json, or a category name under models/trained."""
    for candidate in (Path(value), trained_dir / value):
        if (candidate / "meta.json").is_file():
            return candidate
    known = sorted(p.name for p in trained_dir.glob("*") if (p / "meta.json").is_file())
    raise DdadError(
        f"--model: {value!r} is neither a folder with meta.json nor a category under "
        f"{trained_dir} (found: {', '.join(known) or 'none'}); run `dvc repro` to train one"
    )


def _bench_subject(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The model and images to time: a trained one with its test images, or a random preset.

    A trained category's search is timed against as many bank images as its score stage uses
    (``bank_images``); otherwise against ``score.bank_images``.
    """
    score = score_settings(params)
    if args.model:
        if args.channels or args.image_size:
            raise DdadError("--channels/--image-size: not used with --model (meta.json fixes them)")
        model_dir = resolve_model_dir(args.model)
        model, diffusion, meta = load_trained(model_dir)
        preset, channels, size = meta["preset"], meta["channels"], meta["image_size"]
        category, root = meta.get("category", model_dir.name), DATA_DIR
        if test_images(root, category):
            images = bench.category_images(
                root, category, args.images, channels, size, **_preprocessing(params)
            )
            source = f"test images of {category}"
            split = training_split(root, {**meta, "category": category}, score)
            score = replace(score, bank_images=len(split.bank))
        else:
            images = bench.random_images(args.images, channels, size)
            source = f"random images in [-1, 1] (no test images of {category} found)"
    else:
        preset = args.preset or setting(params, "model.preset", "tiny")
        channels = int(args.channels or 3)
        configured = setting(params, "data.image_size", AUTO)  # auto: no photographs here, 64
        size = args.image_size or PRESETS[preset].image_size
        size = size or (64 if configured == AUTO else configured)
        check_preset(preset, size)
        model = with_random_outputs(build_model(preset, channels, size))
        diffusion = build_diffusion(preset)
        images = bench.random_images(args.images, channels, size)
        source = "random images in [-1, 1] (random weights)"
    return {
        "model": model,
        "diffusion": diffusion,
        "images": images,
        "score": score,
        "about": {
            "preset": preset,
            "channels": channels,
            "image_size": size,
            "image_source": source,
        },
    }


def _bench(args: argparse.Namespace) -> int:
    params = _read_params()
    flags = {k: getattr(args, k) for k in ("sampler", "steps", "ensemble", "timesteps")}
    plan = plan_from(params, overrides=flags)
    device = _device(params, args.device)
    subject = _bench_subject(args, params)
    work = bench.Workload(subject["model"], subject["diffusion"], subject["images"], device)
    procedure = bench.Procedure(plan, _batch_size(params, args.batch_size), subject["score"])
    report = bench.benchmark(work, procedure, seed_share=args.seed_share)
    report |= subject["about"]
    precisions = ("float32", *args.precisions) if args.precisions else None
    report["passes"] = _precision_rows(subject["model"], subject["images"], device, precisions)
    print(bench.format_report(report))
    print("\none UNet pass at batch 1 (max |diff| against float32's output):")
    print(passes.format_table(report["passes"]))
    kept = passes.fastest_agreeing(report["passes"])
    print(
        f"fastest within {passes.AGREEMENT:g} of float32: {kept['precision']}, "
        f"{'channels-last' if kept['channels_last'] else 'standard layout'}"
    )
    if args.processes > 1:
        work = scaling.scaling_workload(
            subject["model"],
            subject["diffusion"],
            subject["images"],
            plan,
            samples_for(
                subject["model"],
                _batch_size(params, args.batch_size),
                device,
                *subject["images"].shape[-2:],
            ),
            device,
            args.processes,
        )
        report["scaling"] = scaling.measure(work, args.processes)
        print("\n" + scaling.format_scaling(report["scaling"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def _precision_rows(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    precisions: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """One pass at batch 1 in each of ``precisions`` (default: those the device runs fast), in
    both memory layouts."""
    sample = torch.from_numpy(images[:1]).to(device)
    timed = precisions or passes.fast_precisions(device)
    return passes.pass_table(model.to(device).eval(), sample, (1,), timed, (False, True))


def _preprocessing(params: dict[str, Any]) -> dict[str, str]:
    return {
        "resize": setting(params, "data.resize", "bicubic"),
        "normalization": setting(params, "data.normalization", "fixed"),
    }


def _checked_images(paths: Sequence[Path]) -> None:
    """Fail before any model work if an input is missing or cannot be decoded."""
    for path in paths:
        if not path.is_file():
            raise DdadError(f"image {path}: no such file; check the path")
        read_image(path)


def _good_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DdadError(f"--good-dir: {folder} is not a folder; point it at defect-free images")
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not images:
        raise DdadError(f"--good-dir: {folder} holds no images; put defect-free images there")
    return images


def _detect(args: argparse.Namespace) -> int:
    params = _read_params()
    model_dir = resolve_model_dir(args.model)
    category = json.loads((model_dir / "meta.json").read_text()).get("category", model_dir.name)
    settings = {
        "plan": plan_from(params, category),
        "score": score_settings(params),
        "device": _device(params, args.device),
        "batch_size": _batch_size(params, None),
        "seed": setting(params, "reconstruct.seed", 0),
        **_preprocessing(params),
    }
    if args.out.exists() and not args.out.is_dir():
        raise DdadError(f"--out: {args.out} is a file; give a folder for the overlay pictures")
    _checked_images(args.images)
    good = _good_images(args.good_dir) if args.good_dir else None
    _checked_images(good or [])
    detector = Detector.load(model_dir, threshold=args.threshold, good_images=good, **settings)
    threshold = detector.threshold
    print(f"model {model_dir}: threshold {threshold:#.4g} ({detector.threshold_source})")
    results = detector.score(args.images)
    for result, name in zip(results, overlay_names(args.images), strict=True):
        print(
            f"{result.verdict:<6} {result.path}  score {result.score:#.4g}  "
            f"threshold {threshold:#.4g}"
        )
        save_overlay(args.out / name, detector.overlay(result))
    flagged = sum(r.is_defect for r in results)
    print(f"{flagged} of {len(results)} images DEFECT; heat-map overlays in {args.out}/")
    return 0


def _size(sides_given: list[int] | None) -> Size | None:
    """--image-size's one side or height and width; None when not given."""
    if not sides_given:
        return None
    if len(sides_given) > 2:
        raise DdadError(f"--image-size: give one side or a height and width, not {sides_given}")
    return sides_given[0] if len(sides_given) == 1 else sides_given


def _baseline(args: argparse.Namespace) -> int:
    categories = args.category or list_categories(args.data)
    if not categories:
        raise DdadError(f"--data: {args.data} holds no categories (folders with train/ or test/)")
    params = _read_params()
    protocol = replace(
        protocol_from(params),
        metrics=("img_auc", "pixel_auc", "aupro", "lit_defective", "lit_good"),
    )
    given = _size(args.image_size)
    sized = {c: given or input_size(params, args.data, c).size for c in categories}
    resize = setting(params, "data.resize", "bicubic")
    score = score_settings(params)
    training = train_config(params)
    held_out = (training.val_images, training.seed)
    found = {
        c: zscore_report(args.data, c, replace(protocol, image_size=size), resize, score, *held_out)
        for c, size in sized.items()
    }
    halves = ("confirmation", "tuning") if protocol.halves else ("confirmation",)
    width = max(len("category"), *(len(c) for c in categories))
    size = ", ".join(sorted({"x".join(map(str, sides(each))) for each in sized.values()}))
    closing = f", maps closed by {score.closing} px" if score.closing else ""
    print(
        f"per-pixel z-score baseline at {size} px (height x width), {args.data}, "
        f"maps scored at the {protocol.resolution} resolution, image score {score.image_score}"
        + closing
    )
    print(f"{'category':<{width}}  {'half':<12}  " + "  ".join(f"{c:>9}" for c in protocol.metrics))
    for category, figures in found.items():
        for half in halves:
            values = "  ".join(f"{figures[half][c]:>9.4f}" for c in protocol.metrics)
            print(f"{category:<{width}}  {half if protocol.halves else 'all':<12}  {values}")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddad", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ddad {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    about_bench = (
        "time reconstruction as the seed (the reference DDAD code) does it against "
        "params.yaml's settings"
    )
    timing = commands.add_parser("bench", help=about_bench, description=about_bench)
    source = timing.add_mutually_exclusive_group()
    source.add_argument("--model", help="trained category folder, or its name under models/trained")
    source.add_argument("--preset", type=_choice(*PRESETS), help="random-weight model preset")
    timing.add_argument("--channels", type=_choice("1", "3"), help="with --preset (default 3)")
    timing.add_argument("--image-size", type=_integer(8, 4096), help="with --preset")
    timing.add_argument("--images", type=_integer(1), default=8, help="images to time (default 8)")
    timing.add_argument(
        "--seed-share",
        type=_number(0, 1, open_low=True),
        default=0.02,
        help="share of the seed's UNet passes to time, the rest extrapolated (default 0.02)",
    )
    timing.add_argument(
        "--sampler", type=_choice(*SAMPLERS), help=_from_params("reconstruct.sampler")
    )
    timing.add_argument(
        "--steps", type=_integer(1, 999), help=f"ddim steps; {_from_params('reconstruct.steps')}"
    )
    timing.add_argument(
        "--ensemble",
        type=_integer(1),
        help=f"reconstructions per image; {_from_params('reconstruct.ensemble')}",
    )
    timing.add_argument(
        "--timesteps", type=_integer(1, 999), help=_from_params("reconstruct.timesteps")
    )
    timing.add_argument(
        "--batch-size", type=_integer(1), help=_from_params("reconstruct.batch_size")
    )
    timing.add_argument("--device", type=_choice(*DEVICES), help=DEVICE_HELP)
    timing.add_argument(
        "--precisions",
        nargs="+",
        type=_choice("bfloat16", "float16"),
        help="also time one pass in these against float32 (default: those the device runs fast)",
    )
    timing.add_argument(
        "--processes",
        type=_integer(1),
        default=2,
        help="also time reconstruct.*'s plan with 1 and this many processes (default 2; 1: skip)",
    )
    timing.add_argument("--json", type=Path, help="also write the report here")
    timing.set_defaults(handler=_bench)

    detect = commands.add_parser(
        "detect", help="score images and call each OK or DEFECT", description=DETECT_ABOUT
    )
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="images to inspect")
    detect.add_argument(
        "--model",
        required=True,
        help="trained category: a folder holding meta.json, or its name under models/trained",
    )
    detect.add_argument(
        "--out",
        type=Path,
        default=DETECT_OUT,
        help="folder for the overlay PNGs, e.g. crack_001.png for test/crack/001.png "
        f"(default {DETECT_OUT})",
    )
    learn = detect.add_mutually_exclusive_group()
    learn.add_argument(
        "--threshold",
        type=_number(),
        help="image score above which an image is a DEFECT (default: learned, as said above)",
    )
    learn.add_argument(
        "--good-dir",
        type=Path,
        help="folder of defect-free images: the threshold is their highest score",
    )
    detect.add_argument("--device", type=_choice(*DEVICES), help=DEVICE_HELP)
    detect.set_defaults(handler=_detect)

    baseline = commands.add_parser(
        "baseline",
        help="image AUROC, pixel AUROC, AUPRO and lit shares of a per-pixel z-score baseline",
    )
    baseline.add_argument("--data", type=Path, default=DATA_DIR, help=f"default {DATA_DIR}")
    baseline.add_argument("--category", nargs="+", help="default: every category under --data")
    baseline.add_argument(
        "--image-size",
        type=_integer(8, 4096),
        nargs="+",
        metavar="SIDE",
        help="one side (square) or height and width the images are resized to "
        "(default: data.image_size of params.yaml; auto: chosen from each category's photographs)",
    )
    baseline.set_defaults(handler=_baseline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ddad command; 0 when it ran, 2 for bad input (one line on stderr)."""
    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except (_UsageError, DdadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
