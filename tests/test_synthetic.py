"""The synthetic dataset: deterministic, complete, exact masks, atomic per category."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddad.data import synthetic
from ddad.data.synthetic import (
    DEFECT_KINDS,
    SYNTHETIC_CATEGORIES,
    generate_dataset,
    render_defect_pair,
)
from ddad.errors import DdadError

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_defect": 8, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _kinds(category: str) -> tuple[str, ...]:
    return tuple(synthetic._CATEGORIES[category].paints)


@pytest.fixture(scope="module")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, list(SYNTHETIC_CATEGORIES), progress=False)
    return root


def test_categories_mix_textures_objects_and_channels() -> None:
    assert len(SYNTHETIC_CATEGORIES) == 3
    assert set(SYNTHETIC_CATEGORIES.values()) == {"texture", "object"}
    rng = np.random.default_rng(0)
    shapes = {name: synthetic.render_good(rng, name).shape for name in SYNTHETIC_CATEGORIES}
    assert (64, 64) in shapes.values() and (64, 64, 3) in shapes.values()
    for name in SYNTHETIC_CATEGORIES:
        assert len(_kinds(name)) >= 3 and set(_kinds(name)) <= set(DEFECT_KINDS)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_dataset(tmp_path / folder, ["stripes", "washer"], seed=seed, **SMALL)
    first, again, other = (_files(tmp_path / f) for f in "abc")
    assert len(first) == 2 * (3 + 2 + 2 * 8)
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first if name.endswith(".png"))


def test_a_category_does_not_depend_on_which_others_are_generated(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "all", list(SYNTHETIC_CATEGORIES), **SMALL)
    generate_dataset(tmp_path / "one", ["washer"], **SMALL)
    assert _files(tmp_path / "all" / "washer") == _files(tmp_path / "one" / "washer")


def test_default_counts_layout_and_modes(default_root: Path) -> None:
    assert sorted(p.name for p in default_root.iterdir()) == sorted(SYNTHETIC_CATEGORIES)
    for name in SYNTHETIC_CATEGORIES:
        folder = default_root / name
        assert len(list((folder / "train" / "good").glob("*.png"))) == 120
        assert len(list((folder / "test" / "good").glob("*.png"))) == 24
        for kind in _kinds(name):
            images = sorted(p.stem for p in (folder / "test" / kind).glob("*.png"))
            masks = sorted(p.stem for p in (folder / "ground_truth" / kind).glob("*.png"))
            assert len(images) == 36 // len(_kinds(name))
            assert masks == [f"{stem}_mask" for stem in images]
        image = Image.open(folder / "test" / _kinds(name)[0] / "000.png")
        assert image.size == (64, 64) and image.mode in ("L", "RGB")
        mask = Image.open(folder / "ground_truth" / _kinds(name)[0] / "000_mask.png")
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}
    assert Image.open(default_root / "stripes" / "train" / "good" / "000.png").mode == "L"


@pytest.mark.parametrize("category", list(SYNTHETIC_CATEGORIES))
def test_mask_is_exactly_the_changed_pixels(category: str) -> None:
    for kind in _kinds(category):
        for index in range(3):
            rng = np.random.default_rng([7, index])
            good, defective, mask = render_defect_pair(rng, category, kind)
            changed = good != defective
            changed = changed.any(axis=-1) if changed.ndim == 3 else changed
            assert mask.dtype == bool and mask.shape == good.shape[:2]
            assert np.array_equal(mask, changed)
            assert mask.sum() >= 6, f"{category}/{kind} changed only {mask.sum()} pixels"


def test_every_category_has_small_defects(default_root: Path) -> None:
    for name in SYNTHETIC_CATEGORIES:
        masks = sorted((default_root / name / "ground_truth").glob("*/*.png"))
        areas = np.array([np.count_nonzero(np.asarray(Image.open(p))) for p in masks])
        assert areas.min() > 0
        small = np.count_nonzero(areas < 0.01 * 64 * 64)
        assert 0.2 * len(areas) <= small <= 0.6 * len(areas), f"{name}: {small} small defects"


def test_interrupted_write_leaves_no_half_category(tmp_path: Path, monkeypatch) -> None:
    generate_dataset(tmp_path, ["tiles"], **SMALL)
    before = _files(tmp_path / "tiles")
    real_save = synthetic._save_png
    calls = []

    def failing_save(path: Path, pixels: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt
        real_save(path, pixels)

    monkeypatch.setattr(synthetic, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, ["stripes"], **SMALL)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, ["tiles"], seed=3, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]
    assert _files(tmp_path / "tiles") == before


def test_regenerating_replaces_a_category(tmp_path: Path) -> None:
    generate_dataset(tmp_path, ["tiles"], seed=1, **SMALL)
    (tmp_path / "tiles" / "stale.txt").write_text("old")
    generate_dataset(tmp_path, ["tiles"], **SMALL)
    generate_dataset(tmp_path / "fresh", ["tiles"], **SMALL)
    assert _files(tmp_path / "tiles") == _files(tmp_path / "fresh" / "tiles")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "tiles"]


def test_unknown_category_names_the_valid_ones(tmp_path: Path) -> None:
    valid = "unknown synthetic category 'bottle': use one of stripes, tiles, washer"
    with pytest.raises(DdadError, match=valid):
        generate_dataset(tmp_path, ["stripes", "bottle"], **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [({"seed": -1}, "seed -1 is negative"), ({"image_size": 16}, "image_size 16 is too small")],
)
def test_bad_seed_or_size_is_a_one_line_error(tmp_path: Path, option: dict, message: str) -> None:
    with pytest.raises(DdadError, match=message):
        generate_dataset(tmp_path, ["tiles"], **{**SMALL, **option})


def test_other_sizes_scale_the_scene(tmp_path: Path) -> None:
    generate_dataset(tmp_path, list(SYNTHETIC_CATEGORIES), image_size=32, **SMALL)
    masks = sorted(tmp_path.glob("*/ground_truth/*/*.png"))
    assert len(masks) == 3 * 8
    for path in masks:
        mask = np.asarray(Image.open(path))
        assert mask.shape == (32, 32) and np.count_nonzero(mask) >= 3
