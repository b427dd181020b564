"""Pictures of the results: heat-map overlays, category overviews, ROC and training-loss charts
and AUROC bars.

Pure functions over arrays that know nothing of params or folders. Figures are built as plain
``matplotlib.figure.Figure`` objects and rendered by Agg, never through pyplot, so nothing opens a
window or piles up in pyplot's global list. Display images are [H, W] or [H, W, C] (C = 1 or 3)
in [0, 1]; anomaly maps are [H, W] in the score's own units.

All images of a category share one map scale (``threshold_scale``), so colour means the same on
every picture of that category: no colour at or below what held-out good images typically
reach, mid-scale colour (green) at the detect threshold (as in ``ddad detect``'s overlays), full
colour (dark red) where the most anomalous test images peak.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw, ImageFont

from ddad.data.imageio import resize_map

HEAT_CMAP = matplotlib.colormaps["jet"]
OVERLAY_ALPHA = 0.6  # heat colour share where the map reaches the top of the scale
DPI = 80
OVERVIEW_COLUMNS = 8
OVERVIEW_TILES = 48
TILE_INCHES = 1.0  # an overview tile's side for a square image; other shapes keep its area
CAPTION_INCHES = 0.2
TITLE_LINE_INCHES = 0.17
MAX_PNG_BYTES = 150_000
PALETTE_SIZES = (256, 128, 64, 32)
THRESHOLD_LEVEL = 0.5  # where the detect threshold sits on the map's colour scale (0..1)
SCALE_TOP_PERCENTILE = 90.0  # of per-image map peaks: the top tenth of test images saturates
BAR_METRICS = ("img_auc", "pixel_auc", "aupro")
MASK_COLOUR = "white"
MISTAKE_COLOURS = {"false alarm": "red", "missed": "magenta"}  # frames; jet has no magenta
MISTAKE_NOTE = (
    "red frame: FALSE ALARM, a good image above the threshold; "
    "magenta frame: MISSED, a defect at or below it"
)
LABEL_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
LABEL_WIDTHS = 28  # a label's font size is the picture's width over this (about 40 characters)
OVERLAY_MIN_SIDE = 256  # a photo's overlay is enlarged to this short side, so its label reads


@dataclass(frozen=True)
class Tile:
    """One small picture of an overview: an overlay, its ground truth outline (none without a
    mask) and a caption."""

    overlay: np.ndarray
    mask: np.ndarray | None
    caption: str
    mistake: str = ""  # "false alarm" or "missed" (``ddad.maps.threshold.mistake``): framed


def threshold_scale(
    good_scores: np.ndarray, threshold: float, maps: np.ndarray | None = None
) -> tuple[float, float]:
    """(vmin, vmax) for a category's anomaly maps, drawn with the detect threshold at mid-scale.

    vmin is the median held-out good score (0 without good scores; never above the threshold):
    colour starts where a map leaves the normal range. vmax is the 90th percentile of the maps'
    per-image peaks, so the most anomalous tenth saturates and one outlier does not wash out
    the rest; never below threshold + (threshold - vmin), and exactly that without maps.
    ``map_levels`` puts the threshold at THRESHOLD_LEVEL between the two, so a map that reaches
    it shows mid-scale colour, never the all-blue of a normal image.
    """
    good_scores = np.asarray(good_scores, dtype=np.float64)
    vmin = min(float(np.median(good_scores)) if good_scores.size else 0.0, threshold)
    vmax = 2 * threshold - vmin
    if maps is not None and len(maps):
        peaks = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1).max(axis=1)
        vmax = max(vmax, float(np.percentile(peaks, SCALE_TOP_PERCENTILE)))
    return vmin, vmax


def map_levels(
    amap: np.ndarray, vmin: float, vmax: float, threshold: float | None = None
) -> np.ndarray:
    """The map on the shared scale, in [0, 1]; with vmin == vmax, 1 exactly where it exceeds it.

    Linear from vmin to vmax, or, given a ``threshold`` between them, in two straight pieces
    that meet at THRESHOLD_LEVEL there.
    """
    amap = np.nan_to_num(np.asarray(amap, dtype=np.float64))
    if vmax <= vmin:
        return (amap > vmax).astype(np.float32)
    if threshold is None or not vmin < threshold < vmax:
        return np.clip((amap - vmin) / (vmax - vmin), 0, 1).astype(np.float32)
    return np.interp(amap, [vmin, threshold, vmax], [0, THRESHOLD_LEVEL, 1]).astype(np.float32)


def heatmap_overlay(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    threshold: float | None = None,
) -> np.ndarray:
    """The image in its own colours with the heat map blended in as strongly as the map is high
    (``map_levels``). Returns an RGB float32 image [H, W, 3] in [0, 1].
    """
    level = map_levels(amap, vmin, vmax, threshold)[..., None]
    heat = HEAT_CMAP(level[..., 0])[..., :3]
    alpha = OVERLAY_ALPHA * level
    return np.clip(as_rgb(image) * (1 - alpha) + heat * alpha, 0, 1).astype(np.float32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A gray [H, W] / [H, W, 1] or colour [H, W, 3] image as [H, W, 3] float32 in [0, 1]."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected an [H, W], [H, W, 1] or [H, W, 3] image, got {image.shape}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def overlay_sheet(
    image: np.ndarray,
    reconstruction: np.ndarray,
    amap: np.ndarray,
    mask: np.ndarray | None,
    title: str,
    vmin: float,
    vmax: float,
    threshold: float | None = None,
    reconstruction_title: str = "reconstruction",
) -> Figure:
    """One image read left to right: input | reconstruction | map | overlay | ground truth.

    The map has a colour bar; ``threshold`` (the detect threshold, in image-score units), when
    given, is marked on it and appended to the title, so a reader can tell whether ``ddad
    detect`` would call the image a defect. ``reconstruction_title`` says what
    the second picture is (a one-pass estimate is blurrier than a full reconstruction). A
    ``mask`` of None (a defective image without one) leaves the last panel gray, titled so.
    """
    fig = Figure(figsize=(12, 2.9), layout="constrained")
    axes = fig.subplots(1, 5)
    _show(axes[0], as_rgb(image), "input")
    _show(axes[1], as_rgb(reconstruction), reconstruction_title)
    centred = threshold is not None and vmin < threshold < vmax
    norm = TwoSlopeNorm(threshold, vmin, vmax) if centred else Normalize(vmin, vmax)
    shown = axes[2].imshow(amap, cmap=HEAT_CMAP, norm=norm)
    _decorate(axes[2], "anomaly map")
    bar = fig.colorbar(shown, ax=axes[2], fraction=0.08)
    bar.ax.tick_params(labelsize=7)
    _show(axes[3], heatmap_overlay(image, amap, vmin, vmax, threshold), "overlay")
    _outline(axes[3], mask)
    truth = np.full(np.shape(amap), 0.5) if mask is None else np.asarray(mask, dtype=np.float32)
    axes[4].imshow(truth, cmap="gray", vmin=0, vmax=1)
    _decorate(axes[4], "ground truth" if mask is not None else "ground truth: no mask")
    suffix = ""
    if threshold is not None:
        bar.ax.axhline(threshold, color="black", lw=2)
        bar.set_label("black line: detect threshold", fontsize=7)
        suffix = f" | detect threshold {threshold:.4g}"
    fig.suptitle(title + suffix, fontsize=10)
    return fig


def evenly_spaced(items: Sequence, limit: int) -> list:
    """At most ``limit`` items spread evenly over the sequence, order kept (all when it fits)."""
    if len(items) <= limit:
        return list(items)
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def overview_grid(
    count: int, aspect: float, columns: int = OVERVIEW_COLUMNS
) -> tuple[int, int, float, float]:
    """(rows, columns, tile width, tile height in inches) for ``count`` tiles of images
    ``aspect`` (width / height) wide: each tile shaped like its image with a square tile's area,
    and the sheet about as wide as ``columns`` square tiles, so wide images stack in fewer
    columns and tall ones line up in more, without the gaps of square cells."""
    stretch = math.sqrt(aspect)
    used = max(1, min(count, round(columns / stretch)))
    return max(1, math.ceil(count / used)), used, TILE_INCHES * stretch, TILE_INCHES / stretch


def category_overview(
    tiles: Sequence[Tile], title: str, columns: int = OVERVIEW_COLUMNS, limit: int = OVERVIEW_TILES
) -> Figure:
    """A grid of small overlays laid out by their images' shape (``overview_grid``), ground truth
    outlined and the verdict's mistakes framed; at most ``limit``, spread over the input."""
    tiles = evenly_spaced(tiles, limit)
    height, width = tiles[0].overlay.shape[:2] if tiles else (1, 1)
    rows, used, tile_width, tile_height = overview_grid(len(tiles), width / height, columns)
    if any(tile.mistake for tile in tiles):
        title = f"{title}\n{MISTAKE_NOTE}"
    lines = title.count("\n") + 1
    fig = Figure(
        figsize=(
            used * tile_width,
            rows * (tile_height + CAPTION_INCHES) + lines * TITLE_LINE_INCHES + 0.2,
        ),
        layout="constrained",
    )
    for index, tile in enumerate(tiles):
        axis = fig.add_subplot(rows, used, index + 1)
        axis.imshow(tile.overlay)
        _outline(axis, tile.mask)
        _decorate(axis, tile.caption, fontsize=6)
        if tile.mistake:
            _frame(axis, tile.mistake)
    fig.suptitle(title, fontsize=8)
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> Figure:
    """Image-level ROC curves, one per category, each labelled with its AUROC."""
    fig, axis = _line_chart(
        {f"{name} ({auc:.3f})": (fpr, tpr) for name, (fpr, tpr, auc) in curves.items()},
        "image-level ROC (AUROC)",
        "lower right",
    )
    axis.plot([0, 1], [0, 1], color="gray", ls="--", lw=0.8)
    axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    return fig


def loss_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Training loss against step, one curve per category, on a log scale: the loss falls by
    orders of magnitude, and a flat or rising tail is what tells training went wrong."""
    drawn = {name: curve for name, curve in curves.items() if len(curve[0])}
    title = "training loss" if drawn else "training loss (none drawn: train.steps 0)"
    fig, axis = _line_chart(drawn, title, "upper right")
    if drawn:
        axis.set_yscale("log")
    axis.set(xlabel="training step", ylabel="loss (log scale)")
    return fig


def auroc_bars(table: pd.DataFrame) -> Figure:
    """Grouped bars of the AUROC-like metrics per category, with their mean as the last group."""
    metrics = [m for m in BAR_METRICS if m in table.columns]
    groups = [*table["category"].astype(str), "mean"]
    width = 0.8 / max(1, len(metrics))
    positions = np.arange(len(groups))
    fig = Figure(figsize=(max(6.0, 0.7 * len(groups) + 1.5), 3.8), layout="constrained")
    axis = fig.add_subplot()
    for index, metric in enumerate(metrics):
        values = table[metric].to_numpy(dtype=np.float64)
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        offset = (index - (len(metrics) - 1) / 2) * width
        label = f"{metric} (mean {mean:.3f})" if math.isfinite(mean) else f"{metric} (empty)"
        axis.bar(positions + offset, [*values, mean], width, label=label)
    axis.axvline(len(groups) - 1.5, color="gray", lw=0.8)
    axis.set_xticks(positions, groups, rotation=45, ha="right", fontsize=8)
    axis.set(ylim=(0, 1.05), ylabel="area under curve")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    return fig


def photo_overlay(
    photo: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    threshold: float | None = None,
    min_side: int = OVERLAY_MIN_SIDE,
) -> np.ndarray:
    """The heat map over a photo at the photo's own size (the map, made at model size, stretched
    to it), enlarged by a whole factor with sharp pixels while its short side is under
    ``min_side``, so a label fits. Returns RGB float32 [H, W, 3] in [0, 1]."""
    rgb = as_rgb(photo)
    factor = max(1, -(-min_side // min(rgb.shape[:2])))
    rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    return heatmap_overlay(rgb, resize_map(amap, rgb.shape[:2]), vmin, vmax, threshold)


def labelled(rgb: np.ndarray, text: str, colour: str) -> np.ndarray:
    """The picture as uint8 [H, W, 3] with ``text`` in white on a ``colour`` box at its top
    left, sized to the picture's width so the label reads on a thumbnail and on a full photo."""
    picture = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    font = ImageFont.truetype(LABEL_FONT, max(10, picture.width // LABEL_WIDTHS))
    margin = max(2, font.size // 3)
    draw = ImageDraw.Draw(picture)
    box = draw.textbbox((2 * margin, 2 * margin), text, font=font)
    draw.rectangle((margin, margin, box[2] + margin, box[3] + margin), fill=colour)
    draw.text((2 * margin, 2 * margin), text, fill="white", font=font)
    return np.asarray(picture)


def save_figure(fig: Figure, path: Path, dpi: int = DPI, max_bytes: int = MAX_PNG_BYTES) -> None:
    """Write ``fig`` as a palette PNG of figsize x dpi pixels, under ``max_bytes`` where it can.

    Busy pictures (48 textured thumbnails) do not compress well, so the palette shrinks from 256
    colours until the file fits; the smallest palette is written even when it does not.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with Image.open(buffer) as rendered:
        rgb = rendered.convert("RGB")
    for colours in PALETTE_SIZES:
        encoded = io.BytesIO()
        rgb.quantize(colours, method=Image.Quantize.FASTOCTREE).save(
            encoded, format="png", optimize=True
        )
        if encoded.tell() <= max_bytes:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.getvalue())


def _show(axis: Axes, rgb: np.ndarray, title: str) -> None:
    axis.imshow(rgb, vmin=0, vmax=1)
    _decorate(axis, title)


def _decorate(axis: Axes, title: str, fontsize: int = 9) -> None:
    axis.set_title(title, fontsize=fontsize)
    axis.set_axis_off()


def _line_chart(
    lines: dict[str, tuple[np.ndarray, np.ndarray]], title: str, legend_at: str
) -> tuple[Figure, Axes]:
    """One axis with a line per labelled (x, y) in distinct colours, and its legend."""
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    axis = fig.add_subplot()
    colours = matplotlib.colormaps["tab10" if len(lines) <= 10 else "tab20"]  # tab20 pairs hues
    for index, (label, (x, y)) in enumerate(lines.items()):
        axis.plot(x, y, color=colours(index % colours.N), lw=1.2, label=label)
    axis.set_title(title, fontsize=10)
    if lines:
        axis.legend(fontsize=7, loc=legend_at)
    return fig, axis


def _frame(axis: Axes, mistake: str) -> None:
    """A thick frame and a tag on a tile whose verdict is wrong, in the mistake's colour."""
    colour = MISTAKE_COLOURS[mistake]
    axis.add_patch(
        Rectangle(
            (0, 0), 1, 1, transform=axis.transAxes, fill=False, lw=2, ec=colour, clip_on=False
        )
    )
    axis.text(
        0.5,
        0.04,
        mistake.upper(),
        transform=axis.transAxes,
        ha="center",
        va="bottom",
        fontsize=5,
        color="white",
        bbox={"facecolor": colour, "edgecolor": "none", "pad": 1},
    )


def _outline(axis: Axes, mask: np.ndarray | None) -> None:
    if mask is None:
        return
    mask = np.asarray(mask, dtype=np.float32)
    if mask.any():
        axis.contour(mask, levels=[0.5], colors=MASK_COLOUR, linewidths=0.8)
