"""The per-pixel z-score baseline: correct on hand-made arrays, helpless on the synthetic data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddad.data.layout import split_train_val
from ddad.data.synthetic import SYNTHETIC_CATEGORIES, generate_dataset
from ddad.errors import DdadError
from ddad.evaluation.baseline import zscore_maps, zscore_report
from ddad.evaluation.metrics import METRIC_NAMES
from ddad.evaluation.protocol import Protocol
from ddad.maps.scoring import ScoreSettings


def test_map_is_the_channel_summed_z() -> None:
    train = np.zeros((2, 2, 3, 2))
    train[1] = 1.0  # every pixel and channel: mean 0.5, std 0.5
    test = np.full((2, 2, 3, 2), 0.5)
    test[1, 0, 2] = [1.0, 0.0]  # z of about 1 in each channel at one pixel
    before = test.copy()
    maps = zscore_maps(train, test)
    assert maps.shape == (2, 2, 3)
    assert maps[0].max() == pytest.approx(0.0)
    assert maps[1, 0, 2] == pytest.approx(2.0, rel=1e-2)
    assert np.delete(maps[1].ravel(), 2).max() == pytest.approx(0.0)
    assert np.array_equal(test, before)


def _write(path: Path, value: float, spot: bool = False, noise: float = 0.02) -> None:
    """An 8x8 image around ``value`` (``noise``: the spread); ``spot``: a bright 2x2 square at the
    top left, and its mask beside it in MVTec's ground_truth folder. The suffix picks the format
    (JPEG too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(value * 1000) + len(path.stem))
    pixels = np.clip(rng.normal(value, noise, size=(8, 8)), 0, 1)
    if spot:
        pixels[:2, :2] = 1.0
        mask = np.zeros((8, 8), dtype=np.uint8)
        mask[:2, :2] = 255
        folder = path.parents[2] / "ground_truth" / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").save(folder / f"{path.stem}_mask.png")
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(path, quality=100)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_report_is_perfect_when_defects_leave_the_normal_range(tmp_path: Path, suffix: str) -> None:
    for index in range(6):
        _write(tmp_path / "toy" / "train" / "good" / f"{index:03d}{suffix}", 0.4 + 0.01 * index)
        _write(tmp_path / "toy" / "test" / "good" / f"{index:03d}{suffix}", 0.405 + 0.01 * index)
        _write(tmp_path / "toy" / "test" / "burn" / f"{index:03d}{suffix}", 0.4, spot=True)
    report = zscore_report(tmp_path, "toy", Protocol(image_size=8))["confirmation"]
    assert list(report) == [*METRIC_NAMES, "img_auc_se"]
    assert report["img_auc"] == 1.0
    assert report["pixel_auc"] > 0.99 and report["aupro"] > 0.9


def test_the_threshold_comes_from_as_many_held_out_images_as_asked(tmp_path: Path) -> None:
    """Flat images, in 8-bit levels: the four fitted ones alternate 100 and 104 (mean 102, spread
    2), the two held out by seed 1 are 102 and 106, so the threshold is the z of 4 levels. Of the
    good test images only the one 6 levels off lies above it; of the defect-free pixels of the
    defective ones, only those of the one whose background is 7 levels off."""
    train = tmp_path / "toy" / "train" / "good"
    fit, held_out = split_train_val([train / f"{index}.png" for index in range(6)], 2, seed=1)
    levels = [100, 104, 100, 104, 102, 106]
    for path, level in zip([*fit, *held_out], levels, strict=True):
        _write(path, level / 255, noise=0)
    for index, level in enumerate([99, 103, 105, 108]):
        _write(tmp_path / "toy" / "test" / "good" / f"{index}.png", level / 255, noise=0)
    for index, level in enumerate([102, 102, 109]):
        _write(tmp_path / "toy" / "test" / "burn" / f"{index}.png", level / 255, True, noise=0)
    protocol = Protocol(image_size=8, halves=False)
    unblurred = ScoreSettings(sigma=0)
    none = zscore_report(tmp_path, "toy", protocol, score=unblurred, held_out=0)["confirmation"]
    assert np.isnan(none["lit_defective"]) and np.isnan(none["lit_good"])  # no threshold
    two = zscore_report(tmp_path, "toy", protocol, score=unblurred, held_out=2, held_out_seed=1)
    assert two["confirmation"]["lit_good"] == 1 / 4
    assert two["confirmation"]["lit_defective"] == pytest.approx(1 / 3)


def test_report_computes_only_the_metrics_asked_for(tmp_path: Path) -> None:
    for index in range(3):
        _write(tmp_path / "toy" / "train" / "good" / f"{index}.png", 0.4)
        _write(tmp_path / "toy" / "test" / "good" / f"{index}.png", 0.4)
        _write(tmp_path / "toy" / "test" / "burn" / f"{index}.png", 0.4, spot=True)
    protocol = Protocol(metrics=("aupro", "img_auc"), image_size=8)
    assert list(zscore_report(tmp_path, "toy", protocol)["tuning"]) == ["aupro", "img_auc"]


def test_missing_category_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "other" / "train").mkdir(parents=True)
    with pytest.raises(DdadError, match="no category 'missing'.*found: other"):
        zscore_report(tmp_path, "missing", Protocol())


def test_zscore_cannot_solve_the_synthetic_dataset(tmp_path: Path) -> None:
    generate_dataset(tmp_path, list(SYNTHETIC_CATEGORIES), progress=False)
    protocol = Protocol(metrics=("img_auc",), halves=False)
    aurocs = {
        name: zscore_report(tmp_path, name, protocol)["confirmation"]["img_auc"]
        for name in SYNTHETIC_CATEGORIES
    }
    print("z-score image AUROC:", {name: round(value, 3) for name, value in aurocs.items()})
    assert all(value <= 0.75 for value in aurocs.values()), aurocs
