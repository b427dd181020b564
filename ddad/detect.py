"""Inspect new images with a trained model: score each one and call it OK or DEFECT.

The threshold is learned from defect-free images only (``ddad.maps.threshold``). By default it comes
from what the pipeline already did: the scores of the held-out good images in
runs/<category>/score/scores.csv, else a fresh calibration on the held-out images the model's
meta.json lists. Those scores are only comparable when
``ddad detect`` reconstructs and scores with the settings the pipeline used, so the CLI reads
them from the same params.yaml; run ``dvc repro`` after changing it.

On a production line a file may be broken, misnamed or the wrong picture;
``Detector.inspect`` names each such file with its reason (``Unreadable``) and scores the
others, a chunk of images at a time, so memory stays flat and results come as they are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from PIL import Image

from ddad.data.imageio import native_channels, read_image
from ddad.data.layout import DATA_DIR, GROUND_TRUTH, MASK_SUFFIX, RUNS_DIR
from ddad.data.preprocess import display_image, model_input
from ddad.diffusion.engine import Reconstruction, prepare_model, resolve_device, run
from ddad.diffusion.models import load_trained
from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.evaluation.viz import labelled, photo_overlay, threshold_scale
from ddad.maps.good_images import BATCH, training_good_images
from ddad.maps.kinds import MapInput, map_kind
from ddad.maps.scoring import ScoreSettings
from ddad.maps.threshold import is_defect, threshold_from_good, validation_scores

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
        model: torch.nn.Module,
        diffusion: GaussianDiffusion,
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
    ) -> None:
        self.device = resolve_device(device)
        self.model = prepare_model(model, self.device)
        self.diffusion = diffusion
        self.channels = channels
        self.image_size = image_size
        self.plan = plan or Plan()
        self.settings = score or ScoreSettings()
        self.kind = map_kind(self.settings, self.device, self.model)
        self.resize = resize
        self.normalization = normalization
        self.batch_size = batch_size
        self.seed = seed
        self.threshold: float | None = None
        self.threshold_source = "not set"
        self.good_scores = np.empty(0)

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
        resize: str = "bicubic",
        normalization: str = "fixed",
        batch_size: int | str = 64,
        seed: int = 0,
        runs_dir: Path = RUNS_DIR,
        data_root: Path = DATA_DIR,
    ) -> Detector:
        """A detector for the model in ``model_dir`` (models/trained/<category>/).

        The threshold is, in order: ``threshold`` as given; calibrated on ``good_images``; learned
        from the held-out good images' scores in runs/<category>/score/scores.csv; calibrated on
        the held-out images meta.json lists, under ``data_root``.
        ``threshold_source`` says which. A map kind that learns from good images learns from the
        training images under that root, as the score stage does.
        """
        model, diffusion, meta = load_trained(Path(model_dir))
        detector = cls(
            model,
            diffusion,
            channels=meta["channels"],
            image_size=meta["image_size"],
            plan=plan,
            score=score,
            resize=resize,
            normalization=normalization,
            device=device,
            batch_size=batch_size,
            seed=seed,
        )
        if detector.kind.learns_from_good_images:
            detector._fit_kind(meta, Path(data_root))
        if threshold is not None:
            detector.threshold, detector.threshold_source = float(threshold), "given"
        elif good_images is not None:
            detector.calibrate(good_images)
        else:
            detector._learn_default_threshold(Path(model_dir), meta, runs_dir, Path(data_root))
        return detector

    def calibrate(self, good_paths: Sequence[Path], source: str | None = None) -> float:
        """Learn the threshold from defect-free images (``threshold_from_good``); return it."""
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

    def _fit_kind(self, meta: dict, root: Path) -> None:
        category = meta["category"]
        if not (root / category).is_dir():
            raise DdadError(
                f"score.map: {self.kind.name} learns from the good training images of "
                f"{category!r}, but {root / category} is missing; run "
                f"`dvc repro fetch_data@{category}`"
            )
        self.kind.fit(training_good_images(root, meta, self.settings, self._input))

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
        self.threshold = threshold_from_good(self.good_scores)
        self.threshold_source = source
        return self.threshold

    def _learn_default_threshold(
        self, model_dir: Path, meta: dict, runs_dir: Path, root: Path
    ) -> None:
        category = meta.get("category", model_dir.name)
        scores_csv = runs_dir / category / "score" / "scores.csv"
        scores = validation_scores(scores_csv)
        if scores.size:
            source = f"{scores.size} held-out good images' scores in {scores_csv}"
            self._set_threshold(scores, source)
            return
        listed = [root / p for p in meta.get("validation_images", [])]
        present = [p for p in listed if p.is_file()]
        if not present:
            raise DdadError(
                f"{model_dir}: no threshold: neither {scores_csv} nor the held-out good images "
                f"of meta.json under {root} exist; give a threshold (--threshold X) "
                "or defect-free images to learn it from (--good-dir DIR)"
            )
        self.calibrate(
            present,
            f"calibrated on {len(present)} held-out good images listed in "
            f"{model_dir / 'meta.json'}",
        )
