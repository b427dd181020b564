"""Inspect new images with a trained model: score each one and call it OK or DEFECT.

A detector loads from one of two folders. A carried one (``Detector.save``'s, which the
detector@<category> stage writes to models/detectors/<category>/) holds everything: the
settings the pipeline scored with, the good images the map learns from, the good scores the
threshold is chosen from and how, and the UNet's weights when the map needs them; it reads
nothing around it, so it runs on the line's PC. A project's trained model
(models/trained/<category>/) takes its settings from the caller (``ddad detect``: params.yaml)
and its reference and good scores from the project's data/ and runs/.

The threshold is chosen from good images' scores alone, at a false-alarm rate
(ddad.maps.threshold). On a production line a file may be broken, misnamed or the wrong
picture; ``Detector.inspect`` names each such file with its reason (``Unreadable``) and scores
the others, a chunk of images at a time, so memory stays flat and results come as they are made.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from PIL import Image

from ddad import __version__
from ddad.data.imageio import native_channels, read_image
from ddad.data.layout import DATA_DIR, DENOISERS_DIR, GROUND_TRUTH, MASK_SUFFIX, RUNS_DIR
from ddad.data.preprocess import display_image, model_input
from ddad.diffusion.engine import Reconstruction, prepare_model, resolve_device, run
from ddad.diffusion.models import load_trained, trained_meta
from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.evaluation.viz import labelled, photo_overlay, threshold_scale
from ddad.maps.denoiser import DENOISER_FILE, TrainedDenoiser
from ddad.maps.good_images import BATCH, GoodImages, training_good_images
from ddad.maps.kinds import MapInput, kind_class, map_kind
from ddad.maps.scoring import DEFAULT_SCORE, ScoreSettings
from ddad.maps.threshold import (
    DetectSettings,
    Threshold,
    good_scores,
    is_defect,
    threshold_at_rate,
)
from ddad.params import plan_from, score_settings

CARRIED_FILE = "detector.json"  # a carried detector's settings, threshold and good scores
GOOD_FILE = "good_images.npz"  # the good images its map learns from, as the model sees them
WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"
VERDICT_COLOURS = {"DEFECT": "firebrick", "OK": "darkgreen"}
CHUNK = 2 * BATCH  # images read and scored together: full network batches, flat memory


@dataclass(frozen=True)
class Result:
    """One inspected image: its score and verdict, and the pictures behind them.

    ``image`` and ``reconstruction`` (the ensemble mean; None with the feature map, which reads
    the image alone and so costs no reconstruction) are [H, W, C] in [0, 1] at model size;
    ``amap`` is [H, W] in score units.
    """

    path: Path
    score: float
    is_defect: bool
    amap: np.ndarray
    image: np.ndarray
    reconstruction: np.ndarray | None

    @property
    def verdict(self) -> str:
        """DEFECT or OK, as ``ddad detect`` prints and labels it."""
        return "DEFECT" if self.is_defect else "OK"


@dataclass(frozen=True)
class Unreadable:
    """An input that was not scored, and why: one line that names the file."""

    path: Path
    reason: str
    verdict: ClassVar[str] = "UNREADABLE"


def is_mask_path(path: Path) -> bool:
    """Whether ``path`` is named like a ground-truth mask of an MVTec layout (<stem>_mask.<ext>,
    or anywhere under a ground_truth folder): a mask scored as a photo gives a verdict on
    nothing, and a folder of a whole category holds both."""
    return path.stem.endswith(MASK_SUFFIX) or GROUND_TRUTH in path.parent.parts


def overlay_names(paths: Iterable[Path]) -> Iterator[str]:
    """A PNG name per input that says which one it is: <folder>_<stem>.png, e.g. crack_001.png
    for test/crack/001.png (the defect kind in an MVTec layout), or <stem>.png for an image in
    the current folder. Repeated names get -2, -3... in input order; each name comes as its
    path does, so a stream of paths is named as it is scored."""
    seen: dict[str, int] = {}
    for path in paths:
        folder = Path(path).parent.name
        base = f"{folder}_{Path(path).stem}" if folder else Path(path).stem
        count = seen.get(base, 0) + 1
        seen[base] = count
        yield f"{base}.png" if count == 1 else f"{base}-{count}.png"


def save_overlay(path: Path, rgb: np.ndarray) -> None:
    """Write an [H, W, 3] uint8 picture (``Detector.overlay``'s) as PNG, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def verdict_label(result: Result, threshold: float) -> str:
    """The verdict with the comparison behind it, e.g. "DEFECT: score 3.2 > threshold 2.99"."""
    sign = ">" if result.is_defect else "<="
    return f"{result.verdict}: score {result.score:#.4g} {sign} threshold {threshold:#.4g}"


class Detector:
    """A trained model with its reconstruction and scoring settings, its map kind (which keeps
    what it learnt from good images, so weights and reference load once) and a threshold."""

    def __init__(
        self,
        model: torch.nn.Module | None,
        diffusion: GaussianDiffusion | None,
        *,
        channels: int,
        image_size: int,
        plan: Plan | None = None,
        score: ScoreSettings | None = None,
        resize: str = "bicubic",
        normalization: str = "fixed",
        device: str | torch.device = "auto",
        batch_size: int | str = 64,
        seed: int = 0,
        denoiser: Path | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = None if model is None else prepare_model(model, self.device)
        self.diffusion = diffusion
        self.channels = channels
        self.image_size = image_size
        self.plan = plan or Plan()
        self.settings = score or ScoreSettings()
        self.denoiser = denoiser  # the feature denoiser's file, for a kind that reads it
        loaded = TrainedDenoiser.load(denoiser) if denoiser else None
        self.kind = map_kind(self.settings, self.device, self.model, loaded)
        self.resize = resize
        self.normalization = normalization
        self.batch_size = batch_size
        self.seed = seed
        self.threshold: float | None = None
        self.threshold_source = "not set"
        self.chosen: Threshold | None = None  # how the threshold was chosen, unless given
        self.false_alarm_rate = DetectSettings().false_alarm_rate
        self.good_scores = np.empty(0)
        self.good: GoodImages | None = None  # what the kind learnt from, to carry with it
        self.meta: dict[str, Any] = {}  # the train stage's meta.json, when loaded from a folder
        self.weights: Path | None = None  # the UNet's weights file, when loaded from one
        self.settings_source = "given"

    @classmethod
    def load(
        cls,
        model_dir: Path,
        threshold: float | None = None,
        plan: Plan | None = None,
        score: ScoreSettings | None = None,
        device: str | torch.device = "auto",
        *,
        good_images: Sequence[Path] | None = None,
        false_alarm_rate: float | None = None,
        resize: str | None = None,
        normalization: str | None = None,
        batch_size: int | str = 64,
        seed: int | None = None,
        runs_dir: Path = RUNS_DIR,
        data_root: Path = DATA_DIR,
        denoisers_dir: Path = DENOISERS_DIR,
    ) -> Detector:
        """A detector for a carried folder (``save``'s, e.g. models/detectors/<category>/: its
        own settings, reference and good scores, nothing read around it) or for a project's
        trained model (models/trained/<category>/: the settings given, else the defaults; a map
        kind that learns from good images learns from the training images under ``data_root``,
        as the score stage does, and one that reads the feature denoiser reads the category's
        under ``denoisers_dir``).

        The threshold is, in order: ``threshold`` as given; chosen from ``good_images``' scores;
        from the carried good scores; from the good images' scores in
        runs/<category>/score/scores.csv; from the held-out images meta.json lists, under
        ``data_root``. It is chosen at ``false_alarm_rate`` (default: the carried folder's, else
        ``DetectSettings``'). ``threshold_source`` and ``settings_source`` say where they came from.
        """
        folder = Path(model_dir)
        given = {"plan": plan, "score": score, "resize": resize, "normalization": normalization}
        given = {key: value for key, value in given.items() if value is not None}
        if seed is not None:
            given["seed"] = seed
        if is_carried(folder):
            detector = cls._unpacked(folder, given, device=device, batch_size=batch_size)
        else:
            detector = cls._trained(
                folder, given, Path(data_root), Path(denoisers_dir), device, batch_size
            )
        detector.false_alarm_rate = false_alarm_rate or detector.false_alarm_rate
        if threshold is not None:
            detector.threshold, detector.threshold_source = float(threshold), "given"
        elif good_images is not None:
            detector.calibrate(good_images)
        elif detector.good_scores.size:
            detector._set_threshold(detector.good_scores, f"in {folder / CARRIED_FILE}")
        else:
            detector._learn_default_threshold(folder, runs_dir, Path(data_root))
        return detector

    @classmethod
    def _trained(
        cls,
        folder: Path,
        given: dict[str, Any],
        root: Path,
        denoisers: Path,
        device: str | torch.device,
        batch_size: int | str,
    ) -> Detector:
        """A project's trained model with the ``given`` settings, fitted on its training images."""
        model, diffusion, meta = load_trained(folder)
        settings = given.get("score", ScoreSettings())
        reads_denoiser = kind_class(settings.map).needs_denoiser(settings)
        detector = cls(
            model,
            diffusion,
            channels=meta["channels"],
            image_size=meta["image_size"],
            device=device,
            batch_size=batch_size,
            denoiser=denoisers / meta["category"] / DENOISER_FILE if reads_denoiser else None,
            **given,
        )
        detector.meta, detector.weights = meta, folder / WEIGHTS_FILE
        if detector.kind.learns_from_good_images:
            detector._fit_kind(root)
        return detector

    @classmethod
    def _unpacked(
        cls,
        folder: Path,
        given: dict[str, Any],
        *,
        device: str | torch.device,
        batch_size: int | str,
    ) -> Detector:
        """What ``save`` wrote to ``folder``, fitted on the good images it carries."""
        if given:
            raise DdadError(
                f"{folder} carries the settings it was scored with ({CARRIED_FILE}); "
                f"{', '.join(given)} cannot change them (load models/trained/<category> for that)"
            )
        carried = json.loads((folder / CARRIED_FILE).read_text())
        weights = folder / WEIGHTS_FILE if carried["weights"] else None
        if weights:
            model, diffusion, meta = load_trained(folder)
        else:
            model, diffusion, meta = None, None, trained_meta(folder)
        settings = carried["settings"]
        detector = cls(
            model,
            diffusion,
            channels=meta["channels"],
            image_size=meta["image_size"],
            plan=plan_from({"reconstruct": settings["plan"]}),
            score=score_settings({"score": settings["score"]}),
            resize=settings["resize"],
            normalization=settings["normalization"],
            seed=settings["seed"],
            device=device,
            batch_size=batch_size,
            denoiser=folder / carried["denoiser"] if carried.get("denoiser") else None,
        )
        detector.meta, detector.weights = meta, weights
        detector.settings_source = str(folder / CARRIED_FILE)
        detector.false_alarm_rate = carried["threshold"]["false_alarm_rate"]
        detector.good_scores = np.asarray(carried["good_scores"], dtype=np.float64)
        if carried["reference"]:
            with np.load(folder / carried["reference"]) as good:
                detector.good = GoodImages(list(good["bank"]), list(good["typical"]))
            detector.kind.fit(detector.good)
        return detector

    def save(self, folder: Path) -> None:
        """Write everything ``load`` needs into ``folder``, so that it runs from there alone:
        meta.json, detector.json (the settings, the threshold and how it was chosen, the good
        scores), the good images the map learnt from (good_images.npz), the UNet's weights
        when the map or its reconstructions need them and the feature denoiser when the map
        reads it (hard links to the loaded files where the file system allows)."""
        if self.chosen is None or not self.meta:
            raise DdadError(
                "save: needs a detector loaded from a trained model, its threshold chosen from "
                "good images' scores (not given)"
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        needs_unet = self.kind.reconstruction_plan(self.plan) or self.kind.needs_unet(self.settings)
        if needs_unet:
            _link_or_copy(self.weights, folder / WEIGHTS_FILE)
        if self.denoiser:
            _link_or_copy(self.denoiser, folder / DENOISER_FILE)
        if self.good is not None:
            np.savez_compressed(
                folder / GOOD_FILE,
                bank=_stacked(self.good.bank, self.channels),
                typical=_stacked(self.good.typical, self.channels),
            )
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        carried = {
            "ddad": __version__,
            "settings": {
                "score": asdict(self.settings),
                "plan": asdict(self.plan),
                "resize": self.resize,
                "normalization": self.normalization,
                "seed": self.seed,
            },
            "threshold": asdict(self.chosen)
            | {"expected_rate": self.chosen.expected_rate, "chosen as": self.chosen.describe()},
            "good_scores": self.good_scores.tolist(),
            "reference": GOOD_FILE if self.good is not None else None,
            "weights": WEIGHTS_FILE if needs_unet else None,
            "denoiser": DENOISER_FILE if self.denoiser else None,
        }
        (folder / CARRIED_FILE).write_text(json.dumps(carried, indent=2) + "\n")

    def describe_settings(self) -> str:
        """Which settings the detector scores with, and where they came from, in one line."""
        changed = {
            key: value
            for key, value in asdict(self.settings).items()
            if value != asdict(DEFAULT_SCORE)[key]
        }
        score = ", ".join(f"{key}={value}" for key, value in changed.items()) or "none"
        plan = ""
        if self.kind.reconstruction_plan(self.plan):
            plan = f"; reconstruct {asdict(self.plan)}"
        return (
            f"settings from {self.settings_source}: {self.kind.describe()}; input "
            f"{self.image_size} px, {self.channels} channel(s), {self.resize}, "
            f"{self.normalization}; score settings beyond the defaults: {score}{plan}"
        )

    def calibrate(self, good_paths: Sequence[Path], source: str | None = None) -> float:
        """Choose the threshold from defect-free images' scores (``threshold_at_rate``, at
        ``false_alarm_rate``); return it."""
        paths = [Path(p) for p in good_paths]
        if not paths:
            raise DdadError("calibrate: no good images given; pass at least one defect-free image")
        scores = np.array([value for value, _, _ in self._scored(paths)])
        folders = sorted({str(p.parent) for p in paths})
        where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
        return self._set_threshold(
            scores, source or f"calibrated on {len(paths)} good images in {where}"
        )

    def score(self, paths: Sequence[Path]) -> list[Result]:
        """Score each image against the threshold, in input order; a file that cannot be read
        stops it with its reason (``inspect`` names it and goes on)."""
        results = []
        for found in self.inspect(paths):
            if isinstance(found, Unreadable):
                raise DdadError(found.reason)
            results.append(found)
        return results

    def inspect(self, paths: Iterable[Path], chunk: int = CHUNK) -> Iterator[Result | Unreadable]:
        """A ``Result`` per image, or ``Unreadable`` with its reason, in input order, ``chunk``
        images at a time: a broken file does not stop the others, memory stays flat over any
        number of images, and ``paths`` may be a stream (a chunk is scored once it is full or
        the stream ends)."""
        if self.threshold is None:
            raise DdadError(
                "the detector has no threshold; pass threshold= or call calibrate(good images)"
            )
        stream = iter(paths)
        while group := [Path(p) for p in islice(stream, chunk)]:
            photos: dict[Path, np.ndarray] = {}
            reasons: dict[Path, str] = {}
            for path in group:
                try:
                    photos[path] = self._photo(path)
                except DdadError as err:
                    reasons[path] = str(err)
            readable = [path for path in group if path in photos]
            results = iter(self._results(readable, photos.__getitem__))
            for path in group:
                yield Unreadable(path, reasons[path]) if path in reasons else next(results)

    def overlay(self, result: Result) -> np.ndarray:
        """The photo at its own size with its heat map, on the scale ``threshold_scale`` gives,
        and its verdict, score and threshold written on it: uint8 [H, W, 3], enlarged while
        its short side is under ``viz.OVERLAY_MIN_SIDE`` (``photo_overlay``)."""
        if self.threshold is None:
            raise DdadError("the detector has no threshold; calibrate it before drawing overlays")
        vmin, vmax = threshold_scale(self.good_scores, self.threshold)
        rgb = photo_overlay(read_image(result.path), result.amap, vmin, vmax, self.threshold)
        return labelled(rgb, verdict_label(result, self.threshold), VERDICT_COLOURS[result.verdict])

    def _results(self, paths: Sequence[Path], load: Callable[[Path], np.ndarray]) -> list[Result]:
        """Each image scored and judged against the threshold, in order."""
        return [
            Result(
                path=path,
                score=value,
                is_defect=is_defect(value, self.threshold),
                amap=amap,
                image=display_image(recon.image),
                reconstruction=None
                if recon.reconstructions is None
                else display_image(recon.reconstructions.mean(axis=0)),
            )
            for path, (value, amap, recon) in zip(paths, self._scored(paths, load), strict=True)
        ]

    def _scored(
        self, paths: Sequence[Path], load: Callable[[Path], np.ndarray] | None = None
    ) -> list[tuple[float, np.ndarray, Reconstruction]]:
        """(image score, anomaly map, reconstruction) per path, in order; ``load`` gives each
        as the model sees it (default: read now)."""
        load = load or self._input
        items = [(str(path), lambda p=Path(path): load(p)) for path in paths]
        recons = list(
            run(
                self.model,
                self.diffusion,
                items,
                self.kind.reconstruction_plan(self.plan),
                seed=self.seed,
                batch_size=self.batch_size,
                device=self.device,
                progress=False,
            )
        )
        raws = self.kind.raw_maps([MapInput(r.image, r.reconstructions) for r in recons])
        finals = [self.kind.finish(raw) for raw in raws]
        return [(score, amap, recon) for (amap, score), recon in zip(finals, recons, strict=True)]

    def _fit_kind(self, root: Path) -> None:
        category = self.meta["category"]
        if not (root / category).is_dir():
            raise DdadError(
                f"score.map: {self.kind.name} learns from the good training images of "
                f"{category!r}, but {root / category} is missing; run "
                f"`dvc repro fetch_data@{category}`"
            )
        self.good = training_good_images(root, self.meta, self.settings, self._input)
        self.kind.fit(self.good)

    def _input(self, path: Path) -> np.ndarray:
        return model_input(path, self.channels, self.image_size, self.resize, self.normalization)

    def _photo(self, path: Path) -> np.ndarray:
        """``_input`` of a photo to inspect, refusing what gives a verdict on nothing: a mask,
        and a colour image for a model of gray ones (the training images were all gray, so
        it comes from another camera or step; their luminance would be judged as if alike)."""
        if is_mask_path(path):
            raise DdadError(
                f"image {path} is a ground-truth mask (named *{MASK_SUFFIX}.* or under "
                f"{GROUND_TRUTH}/), not a photograph; inspect its image instead"
            )
        if self.channels == 1 and native_channels(path) == 3:
            raise DdadError(
                f"image {path} is colour but the model was trained on gray images; "
                "save it as gray or train on colour images"
            )
        return self._input(path)

    def _set_threshold(self, good_scores: np.ndarray, source: str) -> float:
        self.good_scores = np.asarray(good_scores, dtype=np.float64)
        self.chosen = threshold_at_rate(self.good_scores, self.false_alarm_rate)
        self.threshold = self.chosen.value
        self.threshold_source = f"{self.chosen.describe()}; {source}"
        return self.threshold

    def _learn_default_threshold(self, model_dir: Path, runs_dir: Path, root: Path) -> None:
        category = self.meta.get("category", model_dir.name)
        scores_csv = runs_dir / category / "score" / "scores.csv"
        scores = good_scores(scores_csv)
        if scores.size:
            self._set_threshold(scores, f"in {scores_csv}")
            return
        listed = [root / p for p in self.meta.get("validation_images", [])]
        present = [p for p in listed if p.is_file()]
        if not present:
            raise DdadError(
                f"{model_dir}: no threshold: neither {scores_csv} nor the held-out good images "
                f"of meta.json under {root} exist; give a threshold (--threshold X) "
                "or defect-free images to learn it from (--good-dir DIR)"
            )
        self.calibrate(
            present,
            f"calibrated on {len(present)} held-out good images listed in {model_dir / META_FILE}",
        )


def is_carried(folder: Path) -> bool:
    """Whether ``folder`` is a carried detector (``Detector.save``'s), not a trained model."""
    return (Path(folder) / CARRIED_FILE).is_file()


def _stacked(images: Sequence[np.ndarray], channels: int) -> np.ndarray:
    """[N, C, H, W] float32 of ``images``; [0, C, 0, 0] when there are none."""
    if not len(images):
        return np.zeros((0, channels, 0, 0), dtype=np.float32)
    return np.stack(images).astype(np.float32)


def _link_or_copy(source: Path | None, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a large checkpoint is not stored twice), or a
    copy where links cannot be made."""
    if source is None:
        raise DdadError("save: the map needs the UNet, but the detector has no weights file")
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
