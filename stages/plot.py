"""plot: the pictures a person opens first, under plots/images/.

Per category: overlay sheets of the most telling test images (<category>/<defect>_<stem>.png:
the highest-scoring good images, i.e. the likeliest false alarms, then defects alternating best
and worst detected) and plots/overviews/<category>.png of its test images (committed, and a DVC
image plot, so `dvc plots diff` shows two experiments' maps side by side); a category without
test images yet has its held-out good images drawn instead (val_<stem>.png). Over all categories:
auroc.png; plots/charts/roc.png and plots/charts/loss.png, the image-level ROC and the training
loss with a curve per category (committed, and DVC image plots: the only curves `dvc plots`
shows, as its own charts, drawn by a script from the web, stay blank offline); and
plots/example.png (committed, for the README), the clearest detected defect. The folders are
emptied first, so no picture outlives the run that drew it. Beside a feature map a sheet shows
the UNet's one-pass x0 estimate, made here for the images drawn. A defective image without a
mask has no outline, and its sheet's ground truth panel says so.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ddad.data.layout import METRICS_DIR, PLOTS_DIR, RUNS_DIR, TRAINED_DIR
from ddad.data.preprocess import display_image
from ddad.diffusion.engine import prepare_model, resolve_device, run
from ddad.diffusion.models import load_trained
from ddad.diffusion.reconstruct import picture_plan, picture_title
from ddad.diffusion.store import ResultStore
from ddad.errors import DdadError
from ddad.evaluation import viz
from ddad.maps.threshold import Threshold, good_scores, mistake, scores_threshold
from ddad.params import detect_settings, plan_from
from ddad.progress import progress_bar
from stages.common import run_stage

IMAGES_DIR = PLOTS_DIR / "images"
OVERVIEWS_DIR = PLOTS_DIR / "overviews"  # committed and a DVC image plot: `dvc plots diff`
CHARTS_DIR = PLOTS_DIR / "charts"  # committed and DVC image plots, as the overviews
PICTURE_DIRS = (IMAGES_DIR, OVERVIEWS_DIR, CHARTS_DIR)  # emptied first: their pictures are all new
GOOD_SHARE = 1 / 3  # of the overlay sheets, at most, spent on the highest-scoring good images


@dataclass(frozen=True)
class Category:
    """What the pictures of one category are drawn from."""

    name: str
    store: ResultStore
    rows: pd.DataFrame  # scores.csv's rows of the maps in maps.npz, in its order
    maps: np.ndarray
    masks: np.ndarray
    has_truth: np.ndarray  # False where a defective image has no mask (its mask is all False)
    vmin: float
    vmax: float
    threshold: Threshold  # the detect threshold, from the good images' scores as ddad detect has it
    picture_of: Callable[[str], np.ndarray]  # a test key's picture beside its map, [C, H, W]
    picture: str  # what that picture is, in the words its panel is titled with

    def mask(self, index: int) -> np.ndarray | None:
        """The ground truth of test row ``index``; None for a defective image without a mask."""
        return self.masks[index] if self.has_truth[index] else None


@dataclass(frozen=True)
class Candidate:
    """An image up for example.png: a defect first, detected when its map peaks inside its
    mask; with no defect yet, the highest-scoring good image."""

    defective: bool
    peak_inside: bool
    score: float
    category: Category
    index: int


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DdadError(f"{path}: missing; run `dvc repro` so the earlier stages write it")
    return path


def load_category(name: str, params: dict[str, Any]) -> Category:
    """A category's scores, maps and pictures, with its shared map scale."""
    recon = RUNS_DIR / name / "recon"
    summary = json.loads(_require(recon / "summary.json").read_text())
    scores_csv = _require(RUNS_DIR / name / "score" / "scores.csv")
    scores = pd.read_csv(scores_csv)
    with np.load(_require(RUNS_DIR / name / "score" / "maps.npz")) as stored:
        keys, maps, masks = stored["keys"].astype(str), stored["maps"], stored["masks"]
        has_truth = stored["has_truth"]
    rows = scores.set_index("key").loc[keys].reset_index()
    threshold = scores_threshold(scores_csv, detect_settings(params).false_alarm_rate)
    if threshold is None:
        raise DdadError(f"{scores_csv}: no good images' scores; run `dvc repro score@{name}`")
    vmin, vmax = viz.threshold_scale(good_scores(scores_csv), threshold.value, maps)
    store = ResultStore(recon, summary["digest"])
    if summary["picture"] is None:
        picture_of, picture = one_pass_pictures(name, store, params)
    else:
        picture_of, picture = partial(_first_reconstruction, store), summary["picture"]
    return Category(
        name, store, rows, maps, masks, has_truth, vmin, vmax, threshold, picture_of, picture
    )


def _first_reconstruction(store: ResultStore, key: str) -> np.ndarray:
    return store.load(key, ("reconstructions",))["reconstructions"][0]


def one_pass_pictures(
    name: str, store: ResultStore, params: dict[str, Any]
) -> tuple[Callable[[str], np.ndarray], str]:
    """The x0 picture of a stored input, made when a sheet draws it (one UNet pass at the
    category's t, seeded by its key as the reconstruct stage seeds), and its title: the feature
    map stores no reconstruction, and the sheets show a dozen images of a category, not all."""
    model, diffusion, _ = load_trained(TRAINED_DIR / name)
    device = resolve_device(params["device"])
    model = prepare_model(model, device)
    plan = picture_plan(plan_from(params, name))

    def picture_of(key: str) -> np.ndarray:
        image = store.load(key, ("image",))["image"]
        [made] = run(
            model,
            diffusion,
            [(key, lambda: image)],
            plan,
            seed=params["reconstruct"]["seed"],
            batch_size=1,
            device=device,
            progress=False,
        )
        return made.reconstructions[0]

    return picture_of, picture_title(plan)


def pick_overlays(test: pd.DataFrame, count: int) -> list[int]:
    """Row positions worth a sheet: top good images, then defects alternating top and bottom."""
    ranked = test.sort_values("score", ascending=False, kind="stable")
    good = ranked.index[ranked["label"] == 0].tolist()
    defects = ranked.index[ranked["label"] != 0].tolist()
    spread = [defects[k // 2] if k % 2 == 0 else defects[-1 - k // 2] for k in range(len(defects))]
    chosen_good = good[: max(int(count * GOOD_SHARE), count - len(spread))]
    return chosen_good + spread[: count - len(chosen_good)]


def peak_inside(amap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's highest pixel lies on the ground-truth defect."""
    return bool(np.asarray(mask).flat[int(np.argmax(amap))])


def sheet(category: Category, index: int, prefix: str = "") -> Figure:
    """The overlay sheet of one test image."""
    row = category.rows.iloc[index]
    image = category.store.load(row["key"], ("image",))["image"]
    title = f"{prefix}{row['key']} | label {int(row['label'])} | score {row['score']:.4g}"
    return viz.overlay_sheet(
        display_image(image),
        display_image(category.picture_of(row["key"])),
        category.maps[index],
        category.mask(index),
        title,
        category.vmin,
        category.vmax,
        category.threshold.value,
        category.picture,
    )


def overview(category: Category) -> Figure:
    """Small overlays of the category's images drawn (spread over at most 48)."""
    positions = viz.evenly_spaced(range(len(category.rows)), viz.OVERVIEW_TILES)
    tiles = []
    for index in positions:
        row = category.rows.iloc[index]
        image = display_image(category.store.load(row["key"])["image"])
        amap = category.maps[index]
        threshold = category.threshold.value
        overlay = viz.heatmap_overlay(image, amap, category.vmin, category.vmax, threshold)
        caption = f"{row['defect']} {row['score']:.3g}"
        wrong = mistake(row["label"], row["score"], threshold)
        tiles.append(viz.Tile(overlay, category.mask(index), caption, wrong))
    return viz.category_overview(tiles, overview_title(category))


def overview_title(category: Category) -> str:
    """What an overview shows and what its colours mean, in the map's own numbers."""
    unmasked = int(np.count_nonzero(~category.has_truth))
    missing = f" (none: {unmasked} defective without a mask)" if unmasked else ""
    drawn = f"test images (score under each), ground truth outlined in white{missing}"
    if not (category.rows["split"] == "test").any():
        drawn = "held-out good images, no test images yet (score under each)"
    return (
        f"{category.name}: {drawn}\n"
        f"colour: none up to the typical good score {category.vmin:.3g}, green at the detect "
        f"threshold {category.threshold.value:.3g}, dark red from {category.vmax:.3g}\n"
        f"the threshold: {category.threshold.describe()}"
    )


def sheet_path(category: str, key: str) -> Path:
    """plots/images/<category>/<defect>_<stem>.png for a key test/<defect>/<stem>, and
    val_<stem>.png for a held-out good image's val/<stem>."""
    return IMAGES_DIR / category / f"{key.removeprefix('test/').replace('/', '_')}.png"


def candidates(category: Category) -> list[Candidate]:
    """The category's images drawn, each with whether its map peaks inside its mask."""
    return [
        Candidate(
            bool(row.label),
            peak_inside(category.maps[row.Index], category.masks[row.Index]),
            float(row.score),
            category,
            row.Index,
        )
        for row in category.rows.itertuples()
    ]


def curve(path: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The x and y columns of a DVC plot file (a JSON list of points), as arrays."""
    points = json.loads(_require(path).read_text())
    return np.array([p[x] for p in points]), np.array([p[y] for p in points])


def summary_figures(categories: list[str]) -> dict[Path, Figure]:
    """The charts over all categories, by path: ROC curves and AUROC bars from evaluate's
    outputs, and the training loss from train's."""
    table = pd.read_csv(_require(METRICS_DIR / "results.csv"))
    aucs = dict(zip(table["category"].astype(str), table["img_auc"], strict=True))
    roc = {
        name: (*curve(PLOTS_DIR / "roc" / f"{name}.json", "fpr", "tpr"), aucs.get(name, np.nan))
        for name in categories
    }
    loss = {
        name: curve(PLOTS_DIR / "train" / f"{name}.json", "step", "loss") for name in categories
    }
    return {
        CHARTS_DIR / "roc.png": viz.roc_figure(roc),
        CHARTS_DIR / "loss.png": viz.loss_figure(loss),
        IMAGES_DIR / "auroc.png": viz.auroc_bars(table),
    }


def main(params: dict[str, Any], argv: list[str]) -> None:
    names = list(params["data"]["categories"])
    count = params["plot"]["overlays_per_category"]
    for folder in PICTURE_DIRS:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    pool: list[Candidate] = []
    for name in progress_bar(names, desc="plot", unit="category"):
        category = load_category(name, params)
        for index in pick_overlays(category.rows, count):
            path = sheet_path(name, category.rows.at[index, "key"])
            viz.save_figure(sheet(category, index), path)
        viz.save_figure(overview(category), OVERVIEWS_DIR / f"{name}.png")
        pool.extend(candidates(category))
    for path, figure in summary_figures(names).items():
        viz.save_figure(figure, path)
    if pool:
        best = max(pool, key=lambda c: (c.defective, c.peak_inside, c.score))
        figure = sheet(best.category, best.index, prefix=f"{best.category.name}: ")
        viz.save_figure(figure, PLOTS_DIR / "example.png")
    drawn = sum(len(list(folder.rglob("*.png"))) for folder in PICTURE_DIRS)
    print(f"plot: {drawn} pictures in {', '.join(map(str, PICTURE_DIRS))}")


if __name__ == "__main__":
    run_stage(main)
