"""Detector: the threshold rule, where the threshold comes from, and OK/DEFECT verdicts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tiny_model import SIZE, tiny_model_dir, write_gray

from ddad.detect import (
    VERDICT_COLOURS,
    Detector,
    Result,
    ScoreSettings,
    Unreadable,
    is_mask_path,
    overlay_names,
    save_overlay,
)
from ddad.diffusion.models import load_trained
from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.maps.kinds.ddad_comparison import compared_map
from ddad.maps.scoring import finished
from ddad.maps.sources import feature_source
from ddad.maps.threshold import threshold_at_rate

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST_PLAN = Plan(timesteps=20, sampler="ddim", steps=1, ensemble=1)
RECONSTRUCTION_MAP = ScoreSettings(map="reconstruction")  # needs no training images


def fast_detector(tmp_path: Path, **options: Any) -> Detector:
    """A reconstruction-map detector on a tiny random model, one UNet pass per image."""
    return Detector.load(
        tiny_model_dir(tmp_path), plan=FAST_PLAN, score=RECONSTRUCTION_MAP, device="cpu", **options
    )


def test_overlay_names_say_which_input_they_belong_to() -> None:
    paths = [Path("test/crack/000.png"), Path("test/good/000.png"), Path("y.png")]
    assert list(overlay_names(paths)) == ["crack_000.png", "good_000.png", "y.png"]


def test_overlay_names_keep_inputs_with_the_same_folder_and_stem_apart() -> None:
    paths = [Path("a/crack/000.png"), Path("b/crack/000.jpg"), Path("/c/crack/000.png")]
    assert list(overlay_names(paths)) == ["crack_000.png", "crack_000-2.png", "crack_000-3.png"]


@pytest.mark.parametrize(
    ("path", "mask"),
    [
        ("ground_truth/crack/000_mask.png", True),
        ("000_mask.PNG", True),
        ("cam/ground_truth/000.png", True),
        ("test/crack/000.png", False),
        ("masked/000.png", False),
        ("000_masks.png", False),
    ],
)
def test_masks_are_told_by_their_layout_name(path: str, mask: bool) -> None:
    assert is_mask_path(Path(path)) is mask


def test_save_overlay_writes_the_picture_as_it_is(tmp_path: Path) -> None:
    save_overlay(tmp_path / "new" / "o.png", np.full((30, 40, 3), 128, dtype=np.uint8))
    with Image.open(tmp_path / "new" / "o.png") as saved:
        assert saved.size == (40, 30)
        assert saved.mode == "RGB"


def test_score_settings_default_to_the_pipelines_params() -> None:
    """ddad.Detector scores like `dvc repro` does unless told otherwise."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = {
        k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ScoreSettings()).items()
    }
    assert defaults == params["score"]


def test_verdict_follows_the_threshold(tmp_path: Path) -> None:
    image = write_gray(tmp_path / "img.png", 0.5)
    detector = fast_detector(tmp_path, threshold=0.0)
    assert detector.threshold_source == "given"
    (first,) = detector.score([image])
    assert first.score > 0 and first.is_defect
    assert first.amap.shape == (SIZE, SIZE)
    assert first.image.shape == first.reconstruction.shape == (SIZE, SIZE, 1)
    assert 0 <= first.reconstruction.min() and first.reconstruction.max() <= 1
    detector.threshold = first.score / 2
    assert detector.score([image])[0].is_defect
    detector.threshold = first.score * 2
    (again,) = detector.score([image])
    assert again.score == first.score and not again.is_defect
    assert (first.verdict, again.verdict) == ("DEFECT", "OK")


def test_overlay_is_the_photos_size_with_its_verdict_written_on_it(tmp_path: Path) -> None:
    """A 460 x 300 photo scored at 16 x 16 gets a 460 x 300 overlay, labelled in the verdict's
    colour; a 20 x 20 one is enlarged by a whole factor until the label fits."""
    photo = tmp_path / "wide.png"
    Image.fromarray(np.full((300, 460), 128, dtype=np.uint8)).save(photo)
    small = write_gray(tmp_path / "small.png", 0.5)
    detector = fast_detector(tmp_path, threshold=0.0)
    wide, tiny = detector.score([photo, small])
    picture = detector.overlay(wide)
    assert picture.shape == (300, 460, 3) and picture.dtype == np.uint8
    red = Image.new("RGB", (1, 1), VERDICT_COLOURS["DEFECT"]).getpixel((0, 0))
    assert tuple(picture[8, 8]) == red
    assert detector.overlay(tiny).shape == (260, 260, 3)


def test_calibrate_learns_the_rule_from_good_images(tmp_path: Path) -> None:
    good = [write_gray(tmp_path / "good" / f"{i}.png", 0.5, seed=i) for i in range(3)]
    detector = fast_detector(tmp_path, threshold=1.0)
    scores = [r.score for r in detector.score(good)]
    assert detector.calibrate(good) == pytest.approx(threshold_at_rate(scores, 0.01).value)
    assert detector.threshold_source.endswith(
        f"; calibrated on 3 good images in {tmp_path / 'good'}"
    )
    assert detector.threshold_source.startswith("the highest of 3 good images' scores: too few")
    assert not any(r.is_defect for r in detector.score(good))


def test_inspect_names_a_broken_file_and_scores_the_others(tmp_path: Path) -> None:
    good = [write_gray(tmp_path / f"{i}.png", 0.5, seed=i) for i in range(2)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    detector = fast_detector(tmp_path, threshold=1.0)
    first, bad, second = detector.inspect([good[0], broken, good[1]])
    assert isinstance(bad, Unreadable) and bad.path == broken and bad.verdict == "UNREADABLE"
    assert bad.reason.startswith(f"image {broken} is not an image Pillow can read")
    assert [first.score, second.score] == [r.score for r in detector.score(good)]
    with pytest.raises(DdadError, match="is not an image Pillow can read"):
        detector.score([good[0], broken])


def test_inspect_scores_a_stream_a_chunk_at_a_time_with_the_same_scores(tmp_path: Path) -> None:
    """A chunk is scored once it is full, before the stream goes on (a watcher's path is judged
    without waiting for the next), and chunks do not change a score."""
    paths = [write_gray(tmp_path / f"{i}.png", 0.5, seed=i) for i in range(5)]
    pulled: list[Path] = []

    def stream() -> Iterator[Path]:
        for path in paths:
            pulled.append(path)
            yield path

    detector = fast_detector(tmp_path, threshold=1.0)
    found = detector.inspect(stream(), chunk=2)
    first = next(found)
    assert isinstance(first, Result) and first.path == paths[0] and pulled == paths[:2]
    rest = list(found)
    assert [r.path for r in rest] == paths[1:]
    alone = [next(detector.inspect([path], chunk=1)).score for path in paths]
    assert [first.score, *(r.score for r in rest)] == alone


def test_scoring_without_a_threshold_says_how_to_get_one(tmp_path: Path) -> None:
    detector = fast_detector(tmp_path, threshold=1.0)
    detector.threshold = None
    with pytest.raises(DdadError, match="calibrate"):
        detector.score([write_gray(tmp_path / "img.png", 0.5)])


def test_default_threshold_comes_from_the_pipelines_good_scores_at_the_rate(
    tmp_path: Path,
) -> None:
    """The held-out and k-fold good scores of scores.csv, at the false-alarm rate asked: 199
    good scores at 1 % give the second highest."""
    runs = tmp_path / "runs"
    csv = runs / "toy" / "score" / "scores.csv"
    csv.parent.mkdir(parents=True)
    good = np.linspace(0.0, 1.0, 199)
    splits = ["test", "validation", "validation"] + ["good_fold"] * 197
    pd.DataFrame({"split": splits, "score": [9.0, *good]}).to_csv(csv, index=False)
    detector = fast_detector(tmp_path, runs_dir=runs, false_alarm_rate=0.01)
    assert detector.threshold == good[-2] and detector.chosen.rank == 2
    assert detector.threshold_source == (
        "the 2nd highest of 199 good images' scores, for a false-alarm rate of 0.01: 1.00% of "
        f"good parts expected flagged; in {csv}"
    )
    assert fast_detector(tmp_path, runs_dir=runs, false_alarm_rate=0.2).threshold == good[-40]


def test_default_threshold_calibrates_on_meta_validation_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("001", "002"):
        write_gray(root / "toy" / "train" / "good" / f"{name}.png", 0.5, seed=int(name))
    listed = ["toy/train/good/001.png", "toy/train/good/002.png"]
    detector = Detector.load(
        tiny_model_dir(tmp_path, listed),
        plan=FAST_PLAN,
        score=RECONSTRUCTION_MAP,
        device="cpu",
        runs_dir=tmp_path / "runs",
        data_root=root,
    )
    assert detector.threshold is not None and detector.threshold > 0
    assert "; calibrated on 2 held-out good images listed in" in detector.threshold_source


def test_no_threshold_source_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DdadError, match=r"no threshold.*--threshold X.*--good-dir DIR"):
        Detector.load(
            tiny_model_dir(tmp_path),
            plan=FAST_PLAN,
            score=RECONSTRUCTION_MAP,
            device="cpu",
            runs_dir=tmp_path / "runs",
            data_root=tmp_path / "missing",
        )


def _toy_dataset(tmp_path: Path) -> Path:
    """Three good training images of category toy; returns the folder that holds toy/."""
    root = tmp_path / "data"
    for i in range(3):
        write_gray(root / "toy" / "train" / "good" / f"{i}.png", 0.5, seed=i)
    return root


def test_features_map_scores_a_banked_image_near_zero_and_a_spot_higher(tmp_path: Path) -> None:
    root = _toy_dataset(tmp_path)
    detector = Detector.load(
        tiny_model_dir(tmp_path),
        threshold=1.0,
        plan=FAST_PLAN,
        score=ScoreSettings(map="features", backbone="unet", sigma=0, reference_images=0),
        device="cpu",
        data_root=root,
    )
    assert detector.kind.search.inner.bank.shape == (3, 96, SIZE // 2, SIZE // 2)
    banked = tmp_path / "data" / "toy" / "train" / "good" / "0.png"
    spotted = write_gray(tmp_path / "spot.png", 0.5)
    with Image.open(spotted) as picture:
        pixels = np.array(picture)
    pixels[8:12, 8:12] = 0
    Image.fromarray(pixels).save(spotted)
    good, spot = detector.score([banked, spotted])
    assert good.score < 1e-2 and spot.score > 10 * good.score
    assert good.amap.shape == (SIZE, SIZE)
    assert good.reconstruction is None  # the feature map reads the image alone: no UNet pass


def test_features_map_without_training_images_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DdadError, match="features learns from the good training images of 'toy'"):
        Detector.load(
            tiny_model_dir(tmp_path),
            threshold=1.0,
            score=ScoreSettings(map="features"),
            device="cpu",
            data_root=tmp_path / "missing",
        )


def test_features_map_without_a_bank_is_a_one_line_error(tmp_path: Path) -> None:
    model, diffusion, _ = load_trained(tiny_model_dir(tmp_path))
    features = ScoreSettings(map="features")
    detector = Detector(model, diffusion, channels=1, image_size=SIZE, score=features, device="cpu")
    detector.threshold = 1.0
    with pytest.raises(DdadError, match="features has no good reference yet"):
        detector.score([write_gray(tmp_path / "img.png", 0.5)])


def test_ddads_map_compares_a_photo_with_its_reconstruction(tmp_path: Path) -> None:
    """``score.map: ddad`` needs no training images either: its map is the input's and the
    reconstruction's, compared in the eyes of the backbone the settings name."""
    ddad = ScoreSettings(map="ddad", backbone="efficientnet-lite0", backbone_size=32)
    detector = Detector.load(
        tiny_model_dir(tmp_path), plan=FAST_PLAN, score=ddad, device="cpu", threshold=0.0
    )
    (result,) = detector.score([write_gray(tmp_path / "gray.png", 0.5)])
    assert result.amap.shape == (SIZE, SIZE) and result.reconstruction is not None
    image, repaired = (
        2 * np.asarray(x).transpose(2, 0, 1) - 1 for x in (result.image, result.reconstruction)
    )
    expected = compared_map(feature_source(ddad, detector.device), image, repaired[None], ddad)
    np.testing.assert_allclose(result.amap, expected, atol=1e-5)
    assert result.score == pytest.approx(finished(expected, ddad)[1], rel=1e-4)


LITE_FEATURES = ScoreSettings(
    map="features", backbone="efficientnet-lite0", backbone_size=32, reference_images=2
)


def _project_detector(tmp_path: Path, score: ScoreSettings) -> Detector:
    """A project's detector: a tiny model, five good training images, 120 good scores."""
    root = tmp_path / "data"
    for i in range(5):
        write_gray(root / "toy" / "train" / "good" / f"{i}.png", 0.5, seed=i)
    csv = tmp_path / "runs" / "toy" / "score" / "scores.csv"
    csv.parent.mkdir(parents=True)
    good = np.random.default_rng(0).normal(1.0, 0.1, 120)
    pd.DataFrame({"split": ["good_fold"] * 120, "score": good}).to_csv(csv, index=False)
    return Detector.load(
        tiny_model_dir(tmp_path),
        plan=FAST_PLAN,
        score=score,
        device="cpu",
        false_alarm_rate=0.05,
        runs_dir=tmp_path / "runs",
        data_root=root,
    )


@pytest.mark.parametrize(
    ("score", "files"),
    [
        (LITE_FEATURES, ["detector.json", "good_images.npz", "meta.json"]),
        (RECONSTRUCTION_MAP, ["detector.json", "meta.json", "model.pt"]),
    ],
    ids=["features", "reconstruction"],
)
def test_a_carried_detector_scores_from_its_folder_alone_as_in_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, score: ScoreSettings, files: list[str]
) -> None:
    """Saved, moved and loaded where there is no data/, runs/ or model around it, a detector
    scores and decides as it did in the project: same settings, reference and threshold; the
    UNet's weights travel only with a map that reconstructs."""
    project = _project_detector(tmp_path / "project", score)
    project.save(tmp_path / "project" / "carried")
    assert sorted(p.name for p in (tmp_path / "project" / "carried").iterdir()) == files
    shutil.copytree(tmp_path / "project" / "carried", tmp_path / "line" / "toy")
    shutil.rmtree(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "line")
    photos = [write_gray(tmp_path / "line" / f"{i}.png", 0.5, seed=10 + i) for i in range(2)]
    carried = Detector.load(Path("toy"), device="cpu")
    assert carried.settings == score and carried.plan == FAST_PLAN
    assert carried.settings_source == str(Path("toy") / "detector.json")
    assert carried.threshold == project.threshold and carried.chosen == project.chosen
    assert carried.chosen.false_alarm_rate == 0.05 and carried.chosen.good == 120
    assert [r.score for r in carried.score(photos)] == [r.score for r in project.score(photos)]
    stricter = Detector.load(Path("toy"), device="cpu", false_alarm_rate=0.01)
    assert stricter.threshold == carried.good_scores.max()


def test_a_carried_detector_keeps_its_own_settings(tmp_path: Path) -> None:
    project = _project_detector(tmp_path, RECONSTRUCTION_MAP)
    project.save(tmp_path / "carried")
    with pytest.raises(DdadError, match=r"carries the settings .*; score cannot"):
        Detector.load(tmp_path / "carried", score=LITE_FEATURES, device="cpu")
    project.threshold, project.chosen = 1.0, None
    with pytest.raises(DdadError, match="threshold chosen from good images' scores"):
        project.save(tmp_path / "given")
