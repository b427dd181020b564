"""The pictures: figure layouts, overlay values, PNG sizes, and the plot stage on a fake run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

from ddad.diffusion.models import build_model, save_checkpoint
from ddad.diffusion.store import ResultStore
from ddad.errors import DdadError
from ddad.evaluation import viz
from ddad.maps.threshold import scores_threshold
from stages import plot

SIZE = 16
PLAN_KEYS = {"sampler": "ddim", "steps": 2, "ensemble": 1, "jitter": 0.0}
PLAN_KEYS |= {"off_by_one": False, "conditioning": 0.0, "seed": 0}


def gray_and_rgb(rng):
    return [rng.random((SIZE, SIZE)), rng.random((SIZE, SIZE, 1)), rng.random((SIZE, SIZE, 3))]


def test_overlay_is_rgb_in_unit_range_for_gray_and_colour():
    rng = np.random.default_rng(0)
    amap = rng.normal(size=(SIZE, SIZE)) * 5
    for image in gray_and_rgb(rng):
        out = viz.heatmap_overlay(image, amap, -1.0, 1.0)
        assert out.shape == (SIZE, SIZE, 3)
        assert out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 1


def test_overlay_leaves_image_alone_below_scale_and_colours_above():
    image = np.full((SIZE, SIZE), 0.5)
    amap = np.zeros((SIZE, SIZE))
    amap[:4] = 10.0
    out = viz.heatmap_overlay(image, amap, 1.0, 2.0)
    np.testing.assert_allclose(out[4:], 0.5)
    assert np.ptp(out[0, 0]) > 0.2  # coloured, no longer gray


def test_constant_map_with_equal_bounds_does_not_crash():
    image = np.zeros((SIZE, SIZE, 3))
    amap = np.full((SIZE, SIZE), 3.0)
    np.testing.assert_array_equal(viz.map_levels(amap, 3.0, 3.0), 0)
    assert np.isfinite(viz.heatmap_overlay(image, amap, 3.0, 3.0)).all()
    fig = viz.overlay_sheet(image, image, amap, np.zeros((SIZE, SIZE), bool), "t", 3.0, 3.0)
    assert len(fig.axes) == 6


def test_levels_with_equal_bounds_mark_what_exceeds_them():
    levels = viz.map_levels(np.array([[1.0, 2.0, 3.0]]), 2.0, 2.0)
    np.testing.assert_array_equal(levels, [[0, 0, 1]])


def test_threshold_scale_starts_at_typical_good_score_and_saturates_at_high_peaks():
    assert viz.threshold_scale(np.array([1.0, 2.0, 9.0]), 5.0) == (2.0, 8.0)
    assert viz.threshold_scale(np.empty(0), 5.0) == (0.0, 10.0)
    assert viz.threshold_scale(np.array([7.0]), 5.0) == (5.0, 5.0)
    maps = np.zeros((10, 4, 4))
    maps[:, 0, 0] = np.arange(10) * 10  # per-image peaks 0..90
    assert viz.threshold_scale(np.array([1.0, 2.0]), 5.0, maps) == (1.5, pytest.approx(81.0))
    assert viz.threshold_scale(np.array([1.0, 2.0]), 50.0, maps) == (1.5, 98.5)


def test_a_map_at_the_threshold_is_drawn_mid_scale_not_blue():
    """An image that just passes the detect threshold must not look like a normal one, even
    when the most anomalous test images peak far above it."""
    vmin, vmax = 1.0, 20.0
    levels = viz.map_levels(np.array([1.0, 2.0, 11.0, 20.0]), vmin, vmax, threshold=2.0)
    np.testing.assert_allclose(levels, [0.0, 0.5, 0.75, 1.0])
    red, green, blue, _ = viz.HEAT_CMAP(levels[1])
    assert blue < max(red, green)
    assert viz.map_levels(np.array([2.0]), vmin, vmax)[0] < 0.1  # without it: all blue


@pytest.mark.parametrize("channels", [1, 3])
def test_overlay_sheet_has_five_panels_and_titles(channels, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.random((SIZE, SIZE, channels))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[3:8, 3:8] = True
    fig = viz.overlay_sheet(image, image, rng.random((SIZE, SIZE)), mask, "key", 0.2, 0.9, 0.5)
    assert len(fig.axes) == 6  # five panels and the map's colour bar
    assert fig.get_suptitle() == "key | detect threshold 0.5"
    (marked,) = fig.axes[-1].lines
    assert marked.get_ydata()[0] == 0.5
    assert fig.axes[1].get_title() == "reconstruction"
    path = tmp_path / "sheet.png"
    viz.save_figure(fig, path, dpi=50)
    with Image.open(path) as png:
        assert png.size == (600, 145)


def test_overlay_sheet_says_what_its_reconstruction_is():
    image, mask = np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE), bool)
    fig = viz.overlay_sheet(image, image, image, mask, "key", 0, 1, None, "one-pass x0 estimate")
    assert fig.axes[1].get_title() == "one-pass x0 estimate"


def test_overview_draws_one_axis_per_tile_up_to_the_limit(tmp_path):
    rng = np.random.default_rng(2)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[2:5, 2:5] = True
    tiles = [viz.Tile(rng.random((SIZE, SIZE, 3)), mask, f"hole {i}") for i in range(11)]
    fig = viz.category_overview(tiles, "cat")
    assert len(fig.axes) == 11
    assert [a.get_title() for a in viz.category_overview(tiles, "cat", limit=3).axes] == [
        "hole 0",
        "hole 5",
        "hole 10",
    ]
    path = tmp_path / "overview.png"
    viz.save_figure(fig, path, dpi=40)
    with Image.open(path) as png:
        assert png.size == (320, 110)


def drawn_share_and_aspect(fig):
    """The share of the sheet its tiles' pictures cover, and the first picture's width/height."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [axis.get_window_extent(renderer) for axis in fig.axes]
    covered = sum(box.width * box.height for box in boxes)
    return covered / (fig.bbox.width * fig.bbox.height), boxes[0].width / boxes[0].height


@pytest.mark.parametrize("height, width", [(8, 20), (28, 11), (16, 16)])
def test_overview_of_non_square_images_is_laid_out_by_their_shape(height, width):
    """A category at image_size [128, 320] (or of tall photos) fills its sheet, not thin strips
    in square cells (0.27 and 0.33 of the sheet, before)."""
    blank = np.zeros((height, width), bool)
    tiles = [viz.Tile(np.zeros((height, width, 3)), blank, "good 1.2") for _ in range(48)]
    share, aspect = drawn_share_and_aspect(viz.category_overview(tiles, "cat"))
    assert aspect == pytest.approx(width / height)
    assert share > 0.55


def test_overview_grid_keeps_a_tiles_area_and_the_sheets_width():
    assert viz.overview_grid(48, 1.0) == (6, 8, 1.0, 1.0)
    rows, columns, tile_width, tile_height = viz.overview_grid(48, 2.5)
    assert (rows, columns) == (10, 5)
    assert tile_width / tile_height == pytest.approx(2.5)
    assert tile_width * tile_height == pytest.approx(1.0)
    assert viz.overview_grid(3, 0.25)[:2] == (1, 3)


def test_overview_frames_false_alarms_and_misses_and_says_what_the_frames_mean():
    blank = np.zeros((SIZE, SIZE), bool)
    tiles = [
        viz.Tile(np.zeros((SIZE, SIZE, 3)), blank, "good 2", "false alarm"),
        viz.Tile(np.zeros((SIZE, SIZE, 3)), blank, "hole 1", "missed"),
        viz.Tile(np.zeros((SIZE, SIZE, 3)), blank, "hole 3"),
    ]
    fig = viz.category_overview(tiles, "cat")
    frames = [[p.get_edgecolor() for p in a.patches if isinstance(p, Rectangle)] for a in fig.axes]
    assert frames == [[(1.0, 0.0, 0.0, 1.0)], [(1.0, 0.0, 1.0, 1.0)], []]
    assert [[t.get_text() for t in a.texts] for a in fig.axes] == [["FALSE ALARM"], ["MISSED"], []]
    assert fig.get_suptitle() == f"cat\n{viz.MISTAKE_NOTE}"
    assert viz.category_overview(tiles[2:], "cat").get_suptitle() == "cat"


def test_save_figure_shrinks_the_palette_of_busy_pictures(tmp_path):
    fig = viz.overlay_sheet(*[np.random.default_rng(4).random((64, 64))] * 4, "noise", 0, 1)
    viz.save_figure(fig, tmp_path / "rich.png", dpi=30)
    viz.save_figure(fig, tmp_path / "lean.png", dpi=30, max_bytes=1)
    with Image.open(tmp_path / "rich.png") as rich, Image.open(tmp_path / "lean.png") as lean:
        assert rich.mode == lean.mode == "P"
        assert len(rich.getcolors()) > 32 >= len(lean.getcolors())


def test_roc_and_bars_one_axis_with_mean(tmp_path):
    curves = {"a": (np.array([0, 0.5, 1]), np.array([0, 0.9, 1]), 0.7), "b": ([0, 1], [0, 1], 0.5)}
    roc = viz.roc_figure(curves)
    assert len(roc.axes) == 1
    assert [t.get_text() for t in roc.axes[0].get_legend().get_texts()] == [
        "a (0.700)",
        "b (0.500)",
    ]
    table = pd.DataFrame(
        {"category": ["a", "b"], "img_auc": [0.8, 0.6], "pixel_auc": [0.9, np.nan], "x": [1, 2]}
    )
    bars = viz.auroc_bars(table)
    axis = bars.axes[0]
    assert len(bars.axes) == 1
    assert [t.get_text() for t in axis.get_xticklabels()] == ["a", "b", "mean"]
    assert len(axis.patches) == 6
    assert axis.patches[2].get_height() == pytest.approx(0.7)
    assert [t.get_text() for t in axis.get_legend().get_texts()] == [
        "img_auc (mean 0.700)",
        "pixel_auc (mean 0.900)",
    ]
    viz.save_figure(bars, tmp_path / "bars.png")
    with Image.open(tmp_path / "bars.png") as png:
        assert png.size == (480, 304)


def test_loss_chart_draws_each_trained_category_on_a_log_scale():
    curves = {"a": (np.array([10, 20]), np.array([0.9, 0.1])), "b": (np.array([]), np.array([]))}
    axis = viz.loss_figure(curves).axes[0]
    assert axis.get_yscale() == "log"
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["a"]  # b: train.steps 0
    assert viz.loss_figure({}).axes[0].get_title() == "training loss (none drawn: train.steps 0)"


def test_photo_overlay_keeps_a_photos_size_and_enlarges_a_small_one():
    amap = np.zeros((SIZE, SIZE))
    amap[:, SIZE // 2 :] = 5.0  # the right half is hot
    big = viz.photo_overlay(np.full((300, 460), 0.5), amap, 0.0, 2.0, 1.0)
    assert big.shape == (300, 460, 3)
    np.testing.assert_allclose(big[:, :200], 0.5)  # the map is stretched to the photo
    assert np.ptp(big[:, 260:], axis=-1).min() > 0.2
    assert viz.photo_overlay(np.zeros((20, 30, 3)), amap, 0.0, 2.0).shape == (260, 390, 3)


def test_labelled_writes_the_text_on_a_coloured_box_at_the_top_left():
    picture = viz.labelled(np.zeros((256, 512, 3)), "DEFECT: score 3 > threshold 2", "red")
    assert picture.shape == (256, 512, 3) and picture.dtype == np.uint8
    assert tuple(picture[8, 8]) == (255, 0, 0)
    assert (picture[8:26, :400] == 255).all(axis=-1).any()  # white letters
    assert not picture[100:].any()


def test_evenly_spaced_keeps_ends_and_order():
    assert viz.evenly_spaced(list("abcdefghij"), 4) == ["a", "d", "g", "j"]
    assert viz.evenly_spaced(range(3), 48) == [0, 1, 2]


def test_pick_overlays_top_good_then_defects_alternating_top_and_bottom():
    test = pd.DataFrame(
        {
            "label": [0, 0, 0, 0, 1, 1, 1, 1, 1],
            "score": [0.1, 0.4, 0.3, 0.2, 0.9, 0.5, 0.8, 0.6, 0.7],
        }
    )
    assert plot.pick_overlays(test, 6) == [1, 2, 4, 5, 6, 7]
    assert plot.pick_overlays(test, 0) == []
    only_good = test[test["label"] == 0]
    assert plot.pick_overlays(only_good, 3) == [1, 2, 3]
    assert plot.pick_overlays(test, 8) == [1, 2, 3, 4, 5, 6, 7, 8]


def make_category(root, name, channels, boost, rng, features=False, masked=True, tested=True):
    """A fake reconstruct + score + evaluate output for one category, 6 test and 2 good images.

    ``features``: as the feature map leaves it, inputs without reconstructions, and a tiny
    random model whose pictures the plot stage makes. ``masked`` false: rejects without masks,
    stored as the score stage stores them (all False, ``has_truth`` false). ``tested`` false:
    good parts only, the held-out good images' maps in maps.npz, as the score stage has them."""
    held_out = ["val/v0", "val/v1"]
    tests = [f"test/good/{i:03d}" for i in range(3)] + [f"test/hole/{i:03d}" for i in range(3)]
    keys = tests if tested else held_out
    if features:
        model_dir = root / "models" / "trained" / name
        save_checkpoint(build_model("tiny", channels, SIZE), model_dir / "model.pt")
        meta = {"category": name, "preset": "tiny", "channels": channels, "image_size": SIZE}
        (model_dir / "meta.json").write_text(json.dumps(meta))
    store = ResultStore.open(root / "runs" / name / "recon", {"fake": name})
    maps, masks, rows = [], [], []
    for i, key in enumerate(keys):
        label = int("hole" in key)
        mask = np.zeros((SIZE, SIZE), bool)
        amap = rng.random((SIZE, SIZE)).astype(np.float32)
        if label:
            mask[4:9, 4:9] = masked
            amap[6 if i != 5 else 12, 6] = 5.0 + i + boost  # the last defect peaks off its mask
        image = rng.uniform(-1, 1, (channels, SIZE, SIZE)).astype(np.float32)
        recon = {} if features else {"reconstructions": np.stack([image, image]).astype(np.float16)}
        store.save(key, image=image, label=np.int64(label), mask=mask, **recon)
        maps.append(amap)
        masks.append(mask)
        split, defect = ("test", key.split("/")[1]) if tested else ("validation", "good")
        rows.append({"key": key, "split": split, "label": label, "defect": defect})
        rows[-1]["score"] = float(amap.max())
    for key in held_out if tested else []:
        rows.append({"key": key, "split": "validation", "label": 0, "defect": "good"})
        rows[-1]["score"] = 0.95
    summary = {"digest": store.digest, "test": keys if tested else [], "validation": held_out}
    summary["picture"] = None if features else "reconstruction"
    (root / "runs" / name / "recon" / "summary.json").write_text(json.dumps(summary))
    score_dir = root / "runs" / name / "score"
    score_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(score_dir / "scores.csv", index=False)
    known = [masked or "good" in key for key in keys]
    np.savez_compressed(
        score_dir / "maps.npz", keys=np.array(keys), maps=maps, masks=masks, has_truth=known
    )
    roc = [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.0, "tpr": 1.0}, {"fpr": 1.0, "tpr": 1.0}]
    roc = roc if tested else []
    (root / "plots" / "roc").mkdir(parents=True, exist_ok=True)
    (root / "plots" / "roc" / f"{name}.json").write_text(json.dumps(roc))
    loss = [{"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.2}, {"step": 30, "loss": 0.1}]
    (root / "plots" / "train").mkdir(parents=True, exist_ok=True)
    (root / "plots" / "train" / f"{name}.json").write_text(json.dumps(loss))


def test_plot_stage_writes_every_picture_and_removes_stale_ones(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    monkeypatch.chdir(tmp_path)
    make_category(tmp_path, "gray", 1, 0.0, rng, features=True)
    make_category(tmp_path, "colour", 3, 1.0, rng)
    (tmp_path / "metrics").mkdir()
    pd.DataFrame(
        {"category": ["gray", "colour"], "category_type": "texture", "img_auc": [1.0, 0.9]}
    ).to_csv(tmp_path / "metrics" / "results.csv", index=False)
    for stale in (
        tmp_path / "plots" / "images" / "old" / "stale.png",
        plot.OVERVIEWS_DIR / "old.png",
        plot.CHARTS_DIR / "old.png",
    ):
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"")
    titles = {}
    real_save = viz.save_figure

    def recording_save(fig, path, dpi=viz.DPI):
        titles[path.as_posix()] = fig.get_suptitle()
        panels[path.as_posix()] = [axes.get_title() for axes in fig.axes]
        real_save(fig, path, dpi)

    panels = {}
    monkeypatch.setattr(viz, "save_figure", recording_save)
    params = {
        "data": {"categories": ["gray", "colour"]},
        "plot": {"overlays_per_category": 2},
        "reconstruct": {**PLAN_KEYS, "timesteps": 7, "timesteps_per_category": {}},
        "device": "cpu",
    }
    plot.main(params, [])
    written = sorted(p.relative_to("plots/images").as_posix() for p in plot.IMAGES_DIR.rglob("*"))
    assert written == [
        "auroc.png",
        "colour",
        "colour/hole_000.png",
        "colour/hole_002.png",
        "gray",
        "gray/hole_000.png",
        "gray/hole_002.png",
    ]
    overviews = sorted(p.name for p in plot.OVERVIEWS_DIR.iterdir())
    assert overviews == ["colour.png", "gray.png"]
    assert sorted(p.name for p in plot.CHARTS_DIR.iterdir()) == ["loss.png", "roc.png"]
    assert titles["plots/overviews/gray.png"].splitlines()[1] == (
        "colour: none up to the typical good score 0.95, green at the detect threshold 0.95, "
        "dark red from 9.5"
    )
    # colour's hole_002 scores highest but peaks off its mask; its hole_001 is next
    assert titles["plots/example.png"].startswith("colour: test/hole/001 | label 1")
    # the threshold ddad detect uses, chosen from good scores alone, not one fit to test labels
    assert titles["plots/images/gray/hole_000.png"].endswith(" | detect threshold 0.95")
    # gray's feature maps stored no reconstruction: the sheets drawn got the x0 estimate
    assert panels["plots/images/gray/hole_000.png"][1] == "one-pass x0 estimate (t=7)"
    assert panels["plots/images/colour/hole_000.png"][1] == "reconstruction"
    assert plot.load_category("gray", params).threshold == scores_threshold(
        Path("runs/gray/score/scores.csv"), 0.01
    )
    for path in [*plot.IMAGES_DIR.rglob("*.png"), *plot.OVERVIEWS_DIR.iterdir()]:
        with Image.open(path) as png:
            png.verify()
        assert path.stat().st_size < 150_000


@pytest.mark.parametrize(("rate", "false_alarms"), [(0.01, 0), (0.1, 3)])
def test_the_overview_frames_the_verdicts_at_the_threshold_the_rate_chooses(
    tmp_path, monkeypatch, rate, false_alarms
):
    """199 good scores, the k-fold ones with 2.0 and 1.5 on top: at a 1 % false-alarm rate the
    threshold is the second highest, 1.5, and no good test image (peaks under 1) is framed; at
    10 % it is the 20th, 0.5, and all three are false alarms."""
    monkeypatch.chdir(tmp_path)
    make_category(tmp_path, "gray", 1, 0.0, np.random.default_rng(8))
    csv = Path("runs/gray/score/scores.csv")
    folds = pd.DataFrame({"split": "good_fold", "score": [0.5] * 195 + [1.5, 2.0]})
    pd.concat([pd.read_csv(csv), folds]).to_csv(csv, index=False)
    params = {
        "reconstruct": {**PLAN_KEYS, "timesteps": 7, "timesteps_per_category": {}},
        "detect": {"false_alarm_rate": rate},
    }
    category = plot.load_category("gray", params)
    assert category.threshold.good == 199
    fig = plot.overview(category)
    framed = [t.get_text() for a in fig.axes for t in a.texts]
    assert framed == ["FALSE ALARM"] * false_alarms
    assert fig.get_suptitle().splitlines()[2] == f"the threshold: {category.threshold.describe()}"


def test_rejects_without_masks_are_drawn_without_ground_truth(tmp_path, monkeypatch):
    """No outline on an overview, a sheet's last panel saying there is no mask, and no bar for
    the pixel figures that are empty; a masked category beside it keeps its outlines."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(6)
    make_category(tmp_path, "rejects", 1, 0.0, rng, masked=False)
    make_category(tmp_path, "masked", 1, 0.0, rng)
    params = {"reconstruct": {**PLAN_KEYS, "timesteps": 7, "timesteps_per_category": {}}}
    rejects, masked = (plot.load_category(name, params) for name in ("rejects", "masked"))
    defect = 3  # test/hole/000, after the three good images
    assert rejects.mask(defect) is None and masked.mask(defect).any()
    assert rejects.mask(0) is not None  # a good image's ground truth: defect-free
    outlined = [sum(len(a.collections) for a in plot.overview(c).axes) for c in (rejects, masked)]
    assert outlined == [0, 3]
    assert "outlined in white (none: 3 defective without a mask)" in plot.overview_title(rejects)
    assert "without a mask" not in plot.overview_title(masked)
    sheets = [plot.sheet(c, defect) for c in (rejects, masked)]
    assert [s.axes[4].get_title() for s in sheets] == ["ground truth: no mask", "ground truth"]
    assert [len(s.axes[3].collections) for s in sheets] == [0, 1]
    table = pd.DataFrame({"category": ["rejects"], "img_auc": [0.9], "pixel_auc": [np.nan]})
    legend = [t.get_text() for t in viz.auroc_bars(table).axes[0].get_legend().get_texts()]
    assert legend == ["img_auc (mean 0.900)", "pixel_auc (empty)"]


def test_good_parts_only_draw_their_held_out_good_images(tmp_path, monkeypatch):
    """No test images yet: the sheets, the overview and example.png show the held-out good
    images' maps, and the overview says so."""
    monkeypatch.chdir(tmp_path)
    make_category(tmp_path, "first_day", 1, 0.0, np.random.default_rng(7), tested=False)
    (tmp_path / "metrics").mkdir()
    pd.DataFrame({"category": ["first_day"], "img_auc": [np.nan]}).to_csv(
        tmp_path / "metrics" / "results.csv", index=False
    )
    params = {
        "data": {"categories": ["first_day"]},
        "plot": {"overlays_per_category": 2},
        "reconstruct": {**PLAN_KEYS, "timesteps": 7, "timesteps_per_category": {}},
    }
    plot.main(params, [])
    sheets = sorted(p.name for p in (plot.IMAGES_DIR / "first_day").iterdir())
    assert sheets == ["val_v0.png", "val_v1.png"]
    assert (plot.OVERVIEWS_DIR / "first_day.png").is_file()
    assert (plot.PLOTS_DIR / "example.png").is_file()
    title = plot.overview_title(plot.load_category("first_day", params))
    assert title.startswith("first_day: held-out good images, no test images yet (score under")


def test_charts_have_their_size_and_the_same_bytes_every_render(tmp_path, monkeypatch):
    """plots/charts is committed with its hash in dvc.lock: a rerun must not change a byte."""
    monkeypatch.chdir(tmp_path)
    make_category(tmp_path, "colour", 3, 1.0, np.random.default_rng(5))
    (tmp_path / "metrics").mkdir()
    pd.DataFrame({"category": ["colour"], "img_auc": [0.9]}).to_csv(
        tmp_path / "metrics" / "results.csv", index=False
    )
    renders = []
    for run in ("first", "second"):
        for path, figure in plot.summary_figures(["colour"]).items():
            viz.save_figure(figure, tmp_path / run / path.name)
        renders.append({p.name: p.read_bytes() for p in (tmp_path / run).iterdir()})
    assert renders[0] == renders[1]
    assert sorted(renders[0]) == ["auroc.png", "loss.png", "roc.png"]
    with Image.open(tmp_path / "first" / "roc.png") as roc:
        assert roc.size == (440, 400)
        assert not {"date:create", "Creation Time", "date:modify"} & set(roc.info)


def test_plot_stage_names_the_missing_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"data": {"categories": ["nope"]}, "plot": {"overlays_per_category": 1}}
    with pytest.raises(DdadError, match=r"^runs/nope/recon/summary.json: missing; run `dvc repro`"):
        plot.main(params, [])
