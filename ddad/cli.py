"""The ``ddad`` command: ``bench`` (seed vs current speed), ``detect`` (inspect images) and
``baseline`` (the per-pixel z-score baseline's image AUROC, pixel AUROC, AUPRO and lit shares).

``ddad detect`` with a carried detector folder (models/detectors/<category>) scores with the
settings it carries and reads nothing else. Otherwise the settings the pipeline also uses
(reconstruction plan, scoring, preprocessing, device, false-alarm rate) are read from
params.yaml in the current folder when it is there, so ``ddad detect`` scores images the way
the pipeline scored the images its threshold comes from. Every bad value, from a flag or from
params.yaml, stops the command with one line and exit code 2; ``detect`` also says by its exit
status what a line's controller acts on (``DETECT_EXIT``).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from itertools import tee
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np
import torch

from ddad import __version__
from ddad.data.imageio import IMAGE_SUFFIXES, Size, is_image_file, read_image, sides
from ddad.data.layout import DATA_DIR, DETECTORS_DIR, TRAINED_DIR, list_categories, test_images
from ddad.detect import (
    CHUNK,
    Detector,
    Result,
    Unreadable,
    is_carried,
    overlay_names,
    save_overlay,
)
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
    denoiser_settings,
    detect_settings,
    input_size,
    parse_params,
    plan_from,
    protocol_from,
    score_settings,
    setting,
    train_config,
)
from ddad.progress import progress_bar
from ddad.tools import bench, scaling

DETECT_OUT = Path("detections")


DESCRIPTION = (
    "Visual anomaly detection with denoising diffusion models: inspect images with a trained "
    "model (detect), time reconstruction (bench), or score a simple baseline (baseline). "
    "Settings the pipeline also uses come from params.yaml in the current folder when it is there."
)
DEVICE_HELP = "auto (CUDA when present), cpu or cuda; default: params.yaml's device, else auto"
DETECT_ABOUT = (
    "Score each image the PATHs name with a trained model and call it DEFECT when its score is "
    "above the threshold, else OK: one line per image, and a heat-map overlay of each written to "
    "--out, at the image's own size with its verdict, score and threshold on it. A file that "
    "cannot be read (broken, empty, not an image, a colour image for a gray model, a "
    "ground-truth mask: named *_mask.* or under ground_truth/) is named UNREADABLE with its "
    "reason, and the others are scored. --model is a carried "
    "detector folder (models/detectors/<category>, which `dvc repro` writes: copy it anywhere; "
    "it holds its settings, good reference and good scores, and reads nothing around it) or a "
    "project's trained model (models/trained/<category>, with params.yaml's settings). Unless "
    "--threshold sets it, the threshold is chosen from good images' scores at the false-alarm "
    "rate: those of --good-dir, else the carried ones, else the good images' scores in "
    "runs/<category>/score/scores.csv under the current folder, else those of the held-out "
    "good images the model's meta.json lists, scored now. The first lines say which threshold "
    "and which settings are used."
)
EXIT_OK, EXIT_DEFECT, EXIT_ERROR, EXIT_UNREADABLE = 0, 1, 2, 3
DETECT_EXIT = f"""exit status, for a line's controller:
  {EXIT_OK}    every input was read and every image is OK
  {EXIT_DEFECT}    at least one image is a DEFECT, whether or not some inputs were unreadable
  {EXIT_ERROR}    a usage, params.yaml or model error: the run stopped (rows written so far stay)
  {EXIT_UNREADABLE}    some inputs could not be read (each named, with why) and no image is a DEFECT
  130  interrupted (Ctrl-C); rows written so far stay"""
ROW_FIELDS = ("path", "score", "threshold", "verdict", "reason", "overlay")


def _from_params(key: str) -> str:
    return f"default: params.yaml's {key}, else the pipeline's default"


class _UsageError(Exception):
    """A bad command line, reported like any other user error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message.removeprefix("argument "))


class _LinesKept(argparse.HelpFormatter):
    """Wraps each line of a description or epilog apart, so the exit-status table keeps its
    rows; a row (an indented line) that wraps goes on under its text."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            textwrap.fill(
                line,
                width,
                initial_indent=indent,
                subsequent_indent=indent + (" " * 7 if line.startswith(" ") else ""),
                break_on_hyphens=False,
            )
            for line in text.splitlines()
        )


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


def resolve_model_dir(
    value: str, trained_dir: Path = TRAINED_DIR, detectors_dir: Path | None = DETECTORS_DIR
) -> Path:
    """``--model``: a folder holding meta.json (a carried detector or a trained model), or a
    category name: its carried detector under ``detectors_dir`` (None: not looked for), else
    its trained model."""
    carried = [detectors_dir / value] if detectors_dir else []
    for candidate in (Path(value), *carried, trained_dir / value):
        if (candidate / "meta.json").is_file():
            return candidate
    known = sorted(p.name for p in trained_dir.glob("*") if (p / "meta.json").is_file())
    raise DdadError(
        f"--model: {value!r} is neither a folder with meta.json nor a category under "
        f"{detectors_dir} or {trained_dir} (found: {', '.join(known) or 'none'}); run "
        "`dvc repro` to train one"
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
        model_dir = resolve_model_dir(args.model, detectors_dir=None)  # the seed needs the UNet
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
    procedure = bench.Procedure(
        plan,
        _batch_size(params, args.batch_size),
        subject["score"],
        denoiser_settings(params).shape,
    )
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


def _images_in(path: Path) -> list[Path]:
    """A folder's image files, recursively and sorted (hidden ones and those in hidden folders
    apart: a camera's or a tool's side files); a file itself when it is an image."""
    if not path.is_dir():
        return [path] if is_image_file(path) else []
    return sorted(
        found
        for found in path.rglob("*")
        if found.is_file()
        and is_image_file(found)
        and not any(part.startswith(".") for part in found.relative_to(path).parts)
    )


def _named(text: str) -> list[Path]:
    """The images one input names: a folder's, a glob pattern's (quoted, so the shell left it),
    or the path itself, image or not, so that a wrong one is reported with its reason."""
    path = Path(text)
    if path.is_dir():
        return _images_in(path)
    if path.exists() or not any(sign in text for sign in "*?["):
        return [path]
    matches = sorted(glob.glob(text, recursive=True))
    return [image for match in matches for image in _images_in(Path(match))] or [path]


def _inputs(given: Sequence[str], stdin: TextIO) -> Iterator[Path]:
    """The image paths of the command line, in its order; ``-`` reads more, one a line, from
    ``stdin`` as they come, so a watcher can feed a running command."""
    for text in given:
        names = (line.strip() for line in stdin) if text == "-" else [text]
        for name in names:
            yield from _named(name) if name else []


def _no_images(given: Sequence[str]) -> DdadError:
    return DdadError(
        f"no images in {' '.join(given)}; give image files ({', '.join(IMAGE_SUFFIXES)}), "
        "folders or glob patterns holding them, or - to read their paths from standard input"
    )


@contextmanager
def _row_files(
    csv_path: Path | None, jsonl_path: Path | None
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A writer of one row to --csv and --jsonl, each line flushed as it is written, so a
    controller reads it at once and an interrupted run keeps what it judged."""
    with ExitStack() as files:
        writers = []
        if csv_path:
            table = csv.DictWriter(_opened_for_rows(files, csv_path, "--csv"), ROW_FIELDS)
            table.writeheader()
            writers.append(table.writerow)
        if jsonl_path:
            lines = _opened_for_rows(files, jsonl_path, "--jsonl")
            writers.append(lambda row: lines.write(json.dumps(row) + "\n"))

        def write(row: dict[str, Any]) -> None:
            for writer in writers:
                writer(row)

        yield write


def _opened_for_rows(files: ExitStack, path: Path, flag: str) -> TextIO:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return files.enter_context(path.open("w", newline="", buffering=1))
    except OSError as err:
        raise DdadError(f"{flag}: cannot write {path}: {err.strerror or err}") from err


def _row(found: Result | Unreadable, threshold: float, overlay: Path | None) -> dict[str, Any]:
    """One input's row: a score for an image that was read, a reason for one that was not."""
    read = isinstance(found, Result)
    return {
        "path": str(found.path),
        "score": found.score if read else None,
        "threshold": threshold,
        "verdict": found.verdict,
        "reason": None if read else found.reason,
        "overlay": str(overlay) if overlay else None,
    }


def _line(found: Result | Unreadable, threshold: float) -> str:
    if isinstance(found, Unreadable):
        return f"{found.verdict} {found.path}  {found.reason}"
    return f"{found.verdict:<6} {found.path}  score {found.score:#.4g}  threshold {threshold:#.4g}"


def _judge_all(
    detector: Detector,
    paths: Iterable[Path],
    total: int | None,
    chunk: int,
    overlays: Path | None,
    write_row: Callable[[dict[str, Any]], None],
) -> Counter[str]:
    """Judge every path, printing its line and writing its row and overlay as it comes, under
    a progress bar; the count of each verdict. On a terminal a line is printed above the bar
    (tqdm's write); into a log or a pipe, where the bar is throttled, a plain print, flushed
    for whoever reads the lines as they come."""
    scored, named = tee(paths)
    flushed_print = partial(print, flush=True)
    verdicts: Counter[str] = Counter()
    threshold = detector.threshold
    with progress_bar(total=total, desc="detect", unit="img", leave=False) as bar:
        say = partial(bar.write, file=sys.stdout) if sys.stderr.isatty() else flushed_print
        for found, name in zip(detector.inspect(scored, chunk), overlay_names(named), strict=True):
            overlay = overlays / name if overlays and isinstance(found, Result) else None
            if overlay:
                save_overlay(overlay, detector.overlay(found))
            say(_line(found, threshold))
            write_row(_row(found, threshold, overlay))
            verdicts[found.verdict] += 1
            bar.update()
    return verdicts


def _exit_status(verdicts: Counter[str]) -> int:
    """DETECT_EXIT: a DEFECT wins over unreadable files, as the part must be stopped first."""
    if verdicts["DEFECT"]:
        return EXIT_DEFECT
    return EXIT_UNREADABLE if verdicts[Unreadable.verdict] else EXIT_OK


def _detect_settings(args: argparse.Namespace, model_dir: Path) -> tuple[dict[str, Any], str]:
    """``Detector.load``'s settings for ``model_dir`` and where they come from: a carried folder
    has its own and reads nothing around it; a project's trained model takes params.yaml's (the
    defaults outside a project)."""
    if is_carried(model_dir):
        device = resolve_device(args.device or "auto")
        return {"device": device, "false_alarm_rate": args.false_alarm_rate}, ""
    params = _read_params()
    category = json.loads((model_dir / "meta.json").read_text()).get("category", model_dir.name)
    settings = {
        "plan": plan_from(params, category),
        "score": score_settings(params),
        "device": _device(params, args.device),
        "batch_size": _batch_size(params, None),
        "seed": setting(params, "reconstruct.seed", 0),
        "false_alarm_rate": args.false_alarm_rate or detect_settings(params).false_alarm_rate,
        **_preprocessing(params),
    }
    return settings, str(PARAMS_FILE) if params else "the defaults (no params.yaml here)"


def _listed(given: Sequence[str]) -> tuple[Iterable[Path], int | None]:
    """The inputs' paths and how many: all of them at once, so that no image at all stops the
    command before the model loads; or, with standard input among them, as they come."""
    paths = _inputs(given, sys.stdin)
    if "-" in given:
        return paths, None
    listed = list(paths)
    if not listed:
        raise _no_images(given)
    return listed, len(listed)


def _summary(verdicts: Counter[str], overlays: Path | None) -> str:
    images = verdicts["OK"] + verdicts["DEFECT"]
    parts = [f"{verdicts['DEFECT']} of {images} images DEFECT"]
    unreadable = verdicts[Unreadable.verdict]
    if unreadable:
        parts.append(f"{unreadable} file{'s' * (unreadable > 1)} unreadable, named above")
    if overlays:
        parts.append(f"heat-map overlays in {overlays}/")
    return "; ".join(parts)


def _detect(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threshold is not None and args.false_alarm_rate:
        raise DdadError("--false-alarm-rate: chooses a threshold; --threshold gives one: pass one")
    model_dir = resolve_model_dir(args.model)
    settings, source = _detect_settings(args, model_dir)
    overlays = None if args.no_overlays else args.out
    if overlays and overlays.exists() and not overlays.is_dir():
        raise DdadError(f"--out: {args.out} is a file; give a folder for the overlay pictures")
    paths, total = _listed(args.paths)
    good = _good_images(args.good_dir) if args.good_dir else None
    _checked_images(good or [])
    with _row_files(args.csv, args.jsonl) as write_row:
        detector = Detector.load(model_dir, threshold=args.threshold, good_images=good, **settings)
        detector.settings_source = source or detector.settings_source
        threshold = f"threshold {detector.threshold:#.4g} ({detector.threshold_source})"
        print(f"model {model_dir}: {threshold}")
        print(detector.describe_settings())
        loaded = time.perf_counter()
        verdicts = _judge_all(detector, paths, total, args.batch, overlays, write_row)
    if not verdicts:
        raise _no_images(args.paths)
    print(_summary(verdicts, overlays))
    images, took = sum(verdicts.values()), time.perf_counter() - loaded
    print(
        f"{images} inputs in {took:.1f} s, {images / took:.1f} a second, after "
        f"{loaded - started:.1f} s loading the model and its reference",
        file=sys.stderr,
    )
    return _exit_status(verdicts)


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
        "detect",
        help="score images and call each OK or DEFECT",
        description=DETECT_ABOUT,
        epilog=DETECT_EXIT,
        formatter_class=_LinesKept,
    )
    detect.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="an image, a folder (its images, recursively), a quoted glob pattern, or - for "
        "more such paths on standard input, one a line",
    )
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
        help="folder of defect-free images: the threshold is chosen from their scores",
    )
    detect.add_argument(
        "--false-alarm-rate",
        type=_number(0, 0.5, open_low=True),
        help="share of good parts the chosen threshold may flag (default: the carried "
        "folder's, else params.yaml's detect.false_alarm_rate, else 0.01)",
    )
    detect.add_argument(
        "--no-overlays", action="store_true", help="write no overlay PNGs: the fastest run"
    )
    detect.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help=f"also write a row per input here: {', '.join(ROW_FIELDS)} (reason: why a file "
        "was unreadable; overlay: the PNG written)",
    )
    detect.add_argument(
        "--jsonl", type=Path, metavar="FILE", help="the same rows as JSON objects, one a line"
    )
    detect.add_argument(
        "--batch",
        type=_integer(1),
        default=CHUNK,
        help=f"images read and scored together (default {CHUNK}); lines and rows come a batch "
        "at a time, so 1 gives each verdict as soon as its path arrives on standard input",
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
    """Run one ddad command; 0 when it ran (``detect``: DETECT_EXIT), 2 for bad input (one
    line on stderr), 130 when interrupted."""
    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except (_UsageError, DdadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
