"""A seeded, download-free MVTec-layout dataset, simple enough to train a diffusion model on a CPU.

Good images are simple regular patterns (or one part on a plain background) with random phase,
position, orientation and brightness, so that every pixel takes many values over the training set.
Defects are local shapes painted in colours that already occur in good images, so they break the
structure without leaving the normal range of values: a per-pixel statistic cannot find them, a
model of the structure can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ddad.data.folders import replace_folder
from ddad.errors import DdadError
from ddad.progress import progress_bar

SYNTHETIC_CATEGORIES: dict[str, str] = {
    "stripes": "texture",
    "tiles": "texture",
    "washer": "object",
}
DEFECT_KINDS: tuple[str, ...] = ("scratch", "hole", "stain", "crack", "particle")

_REFERENCE_SIZE = 64  # lengths below are in pixels at this size and scale with the image
_NOISE_STD = 0.012
_GAIN_RANGE = (0.88, 1.12)
_VISIBLE_STEP = 24  # 8-bit change that counts as visible when checking a defect
_MIN_VISIBLE_FRACTION = 0.3  # of the pixels the whole shape would cover
_MIN_VISIBLE_PIXELS = 6  # at the reference size
_MAX_ATTEMPTS = 100
_SPLIT_CODES = {"train": 0, "test_good": 1, "test_defect": 2}


@dataclass(frozen=True)
class _Scene:
    """A clean good image with what defects need: its colours and where they may go."""

    image: np.ndarray  # H×W×C float in [0, 1], before brightness and noise
    palette: dict[str, np.ndarray]  # colour name -> C values
    paintable: np.ndarray  # H×W coverage of the surface a defect can be painted on
    sites: np.ndarray  # K×2 (y, x) pixel centres where a defect may be centred


@dataclass(frozen=True)
class _Category:
    """How to draw a category and which palette colours each of its defect kinds may use."""

    render: Callable[[np.random.Generator, int], _Scene]
    paints: dict[str, tuple[str, ...]]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each H×W."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(centres, centres, indexing="ij")


def _coverage(distance_inside: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside, in pixels)."""
    return np.clip(distance_inside + 0.5, 0.0, 1.0)


def _mix(base: np.ndarray, over: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Blend colour (or image) `over` onto `base` with an H×W share in [0, 1]."""
    return base * (1 - share[..., None]) + over * share[..., None]


def _all_sites(size: int, margin: float) -> np.ndarray:
    y, x = _grid(size)
    inside = (np.minimum(y, x) > margin) & (np.maximum(y, x) < size - margin)
    return np.argwhere(inside) + 0.5


def _render_stripes(rng: np.random.Generator, size: int) -> _Scene:
    """Soft-edged dark/light stripes with jittered angle, period and phase."""
    scale = size / _REFERENCE_SIZE
    angle = 0.6 + rng.uniform(-0.12, 0.12)
    period = 8.0 * scale * rng.uniform(0.95, 1.05)
    phase = rng.uniform(0.0, 1.0)
    y, x = _grid(size)
    across = (x * np.cos(angle) + y * np.sin(angle)) / period + phase
    light_share = 0.5 + 0.5 * np.tanh(4.0 * np.cos(2 * np.pi * across)) / np.tanh(4.0)
    palette = {"dark": np.array([0.2]), "light": np.array([0.75])}
    image = _mix(palette["dark"], palette["light"], light_share)
    return _Scene(image, palette, np.ones((size, size)), _all_sites(size, 4 * scale))


def _render_tiles(rng: np.random.Generator, size: int) -> _Scene:
    """Large checkerboard tiles in two colours with soft grout lines, jittered in offset and angle.

    Few, soft edges keep the pattern easy for a small model to reproduce.
    """
    scale = size / _REFERENCE_SIZE
    angle = rng.uniform(-0.06, 0.06)
    period = 21.0 * scale * rng.uniform(0.97, 1.03)
    half_grout = 1.5 * scale
    y, x = _grid(size)
    u = (x * np.cos(angle) - y * np.sin(angle)) / period + rng.uniform(0.0, 1.0)
    v = (x * np.sin(angle) + y * np.cos(angle)) / period + rng.uniform(0.0, 1.0)
    parity = (np.floor(u) + np.floor(v)) % 2
    to_edge = period * np.minimum(
        np.minimum(u % 1.0, 1.0 - u % 1.0), np.minimum(v % 1.0, 1.0 - v % 1.0)
    )
    grout_share = np.clip((half_grout - to_edge) / (1.5 * scale) + 0.5, 0.0, 1.0)
    palette = {
        "terracotta": np.array([0.78, 0.45, 0.30]),
        "cream": np.array([0.85, 0.80, 0.66]),
        "grout": np.array([0.36, 0.34, 0.33]),
    }
    tile = np.where(parity[..., None] == 0, palette["terracotta"], palette["cream"])
    image = _mix(tile, palette["grout"], grout_share)
    return _Scene(image, palette, np.ones((size, size)), _all_sites(size, 4 * scale))


def _render_washer(rng: np.random.Generator, size: int) -> _Scene:
    """A flat brass washer with a darker inner bevel and a key notch, shifted and rotated."""
    scale = size / _REFERENCE_SIZE
    centre = size / 2 + rng.uniform(-8.0, 8.0, size=2) * scale
    outer, inner, bevel = 21.0 * scale, 7.0 * scale, 3.0 * scale
    notch_half_width, notch_depth = 2.0 * scale, 4.0 * scale
    turn = rng.uniform(0.0, 2 * np.pi)
    y, x = _grid(size)
    dy, dx = y - centre[0], x - centre[1]
    radius = np.hypot(dy, dx)
    along = dx * np.cos(turn) + dy * np.sin(turn)
    across = -dx * np.sin(turn) + dy * np.cos(turn)
    notch = _coverage(np.minimum(notch_half_width - np.abs(across), along - (outer - notch_depth)))
    body = _coverage(np.minimum(outer - radius, radius - inner)) * (1 - notch)
    bevel_share = _coverage(inner + bevel - radius)
    palette = {
        "background": np.array([0.16, 0.20, 0.26]),
        "brass": np.array([0.80, 0.68, 0.42]),
        "bevel": np.array([0.44, 0.35, 0.21]),
    }
    part = _mix(palette["brass"], palette["bevel"], bevel_share)
    image = _mix(palette["background"], part, body)
    face = (radius > inner + bevel + 2 * scale) & (radius < outer - 2 * scale) & (notch == 0)
    return _Scene(image, palette, body, np.argwhere(face) + 0.5)


_CATEGORIES: dict[str, _Category] = {
    "stripes": _Category(
        _render_stripes,
        {
            "scratch": ("light",),
            "hole": ("dark",),
            "crack": ("dark",),
            "particle": ("dark", "light"),
        },
    ),
    "tiles": _Category(
        _render_tiles,
        {
            "crack": ("grout",),
            "hole": ("grout",),
            "stain": ("terracotta", "cream"),
            "particle": ("grout", "terracotta", "cream"),
        },
    ),
    "washer": _Category(
        _render_washer,
        {
            "hole": ("background",),
            "stain": ("bevel",),
            "crack": ("background",),
            "particle": ("background",),
        },
    ),
}


def _polyline_coverage(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Coverage of a line of the given width through the (y, x) points."""
    y, x = _grid(size)
    grid = np.stack([y, x], axis=-1)
    nearest = np.full((size, size), np.inf)
    for start, end in zip(points[:-1], points[1:], strict=True):
        step = end - start
        t = np.clip(((grid - start) @ step) / max(step @ step, 1e-9), 0.0, 1.0)
        distance = np.linalg.norm(grid - (start + t[..., None] * step), axis=-1)
        nearest = np.minimum(nearest, distance)
    return _coverage(width / 2 - nearest)


def _discs_coverage(size: int, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    y, x = _grid(size)
    inside = [r - np.hypot(y - c[0], x - c[1]) for c, r in zip(centres, radii, strict=True)]
    return _coverage(np.max(inside, axis=0))


def _walk(start: np.ndarray, heading: float, steps: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Points of a path that turns by the given angles after each step."""
    headings = heading + np.cumsum(turns)
    moves = steps[:, None] * np.stack([np.sin(headings), np.cos(headings)], axis=-1)
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _shape_coverage(
    kind: str, rng: np.random.Generator, size: int, centre: np.ndarray
) -> np.ndarray:
    """Coverage (H×W in [0, 1]) of one defect shape of the given kind around a centre."""
    scale = size / _REFERENCE_SIZE
    if kind == "scratch":
        length = rng.uniform(24.0, 38.0) * scale
        heading = rng.uniform(0.0, 2 * np.pi)
        turns = np.array([0.0, rng.uniform(-0.25, 0.25)])
        path = _walk(centre, heading, np.full(2, length / 2), turns)
        return _polyline_coverage(size, path - (path[-1] - path[0]) / 2, 2.0 * scale)
    if kind == "crack":
        steps = rng.uniform(3.0, 4.5, size=10) * scale
        turns = rng.uniform(-0.9, 0.9, size=10)
        path = _walk(centre, rng.uniform(0.0, 2 * np.pi), steps, turns)
        return _polyline_coverage(size, path - (path[-1] - path[0]) / 2, 2.0 * scale)
    if kind == "hole":
        return _discs_coverage(size, centre[None], np.array([rng.uniform(3.5, 6.0) * scale]))
    if kind == "stain":
        offsets = rng.uniform(-4.0, 4.0, size=(3, 2)) * scale
        return _discs_coverage(size, centre + offsets, rng.uniform(3.0, 5.5, size=3) * scale)
    if kind == "particle":
        side = max(2, round(rng.integers(3, 6) * scale))
        top, left = (np.floor(centre) - side // 2).astype(int)
        coverage = np.zeros((size, size))
        coverage[max(top, 0) : top + side, max(left, 0) : left + side] = 1.0
        return coverage
    raise ValueError(f"unknown defect kind {kind!r}")


def _finish(image: np.ndarray, gain: float, noise: np.ndarray) -> np.ndarray:
    """Brightness, sensor noise and 8-bit quantisation; grayscale comes back H×W."""
    pixels = np.round(np.clip(image * gain + noise, 0.0, 1.0) * 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def _camera(rng: np.random.Generator, scene: _Scene) -> tuple[float, np.ndarray]:
    gain = rng.uniform(*_GAIN_RANGE)
    return gain, rng.normal(0.0, _NOISE_STD, size=scene.image.shape)


def render_good(rng: np.random.Generator, category: str, image_size: int = 64) -> np.ndarray:
    """One good 8-bit image (H×W for grayscale categories, H×W×3 otherwise)."""
    scene = _CATEGORIES[category].render(rng, image_size)
    return _finish(scene.image, *_camera(rng, scene))


def render_defect_pair(
    rng: np.random.Generator, category: str, kind: str, image_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(good, defective, mask): the same part without and with one defect.

    The mask is exactly the pixels whose 8-bit value differs; shapes that change too little
    (painted on a region of the same colour, or cut off by the border) are redrawn.
    """
    paints = _CATEGORIES[category].paints[kind]
    scene = _CATEGORIES[category].render(rng, image_size)
    gain, noise = _camera(rng, scene)
    good = _finish(scene.image, gain, noise)
    least = max(3, round(_MIN_VISIBLE_PIXELS * (image_size / _REFERENCE_SIZE) ** 2))
    for _ in range(_MAX_ATTEMPTS):
        centre = scene.sites[rng.integers(len(scene.sites))]
        intended = _shape_coverage(kind, rng, image_size, centre)
        shape = intended * scene.paintable >= 0.5
        if not shape.any():
            continue
        under = scene.image[shape].mean(axis=0)
        paint = max((scene.palette[name] for name in paints), key=lambda c: np.abs(c - under).sum())
        defective = _finish(np.where(shape[..., None], paint, scene.image), gain, noise)
        change = np.abs(defective.astype(int) - good.astype(int))
        change = change.max(axis=-1) if change.ndim == 3 else change
        visible = np.count_nonzero(change >= _VISIBLE_STEP)
        if visible >= max(least, _MIN_VISIBLE_FRACTION * (intended >= 0.5).sum()):
            return good, defective, change > 0
    raise RuntimeError(f"no visible {kind} on {category} after {_MAX_ATTEMPTS} attempts")


def _image_rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    """A generator per image, so that changing one count leaves the other images unchanged."""
    category_index = list(SYNTHETIC_CATEGORIES).index(category)
    return np.random.default_rng([seed, category_index, _SPLIT_CODES[split], index])


def _save_png(path: Path, pixels: np.ndarray) -> None:
    """Write H×W uint8 as 'L' and H×W×3 as 'RGB'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _write_category(
    category: str, seed: int, size: int, counts: dict[str, int], bar: tqdm, folder: Path
) -> None:
    for split, subfolder in (("train", "train/good"), ("test_good", "test/good")):
        for index in range(counts[split]):
            pixels = render_good(_image_rng(seed, category, split, index), category, size)
            _save_png(folder / subfolder / f"{index:03d}.png", pixels)
            bar.update()
    kinds = tuple(_CATEGORIES[category].paints)
    for index in range(counts["test_defect"]):
        kind, number = kinds[index % len(kinds)], index // len(kinds)
        rng = _image_rng(seed, category, "test_defect", index)
        _, defective, mask = render_defect_pair(rng, category, kind, size)
        _save_png(folder / "test" / kind / f"{number:03d}.png", defective)
        _save_png(folder / "ground_truth" / kind / f"{number:03d}_mask.png", mask * np.uint8(255))
        bar.update()


def generate_dataset(
    root: Path,
    categories: Sequence[str],
    *,
    seed: int = 0,
    image_size: int = 64,
    n_train: int = 120,
    n_test_good: int = 24,
    n_test_defect: int = 36,
    progress: bool = True,
) -> None:
    """Write the synthetic categories under root in MVTec layout (PNG images and 0/255 masks).

    The same seed gives byte-identical files; each category appears complete or not at all.
    """
    unknown = [name for name in categories if name not in SYNTHETIC_CATEGORIES]
    if unknown:
        raise DdadError(
            f"unknown synthetic category {unknown[0]!r}: use one of "
            f"{', '.join(SYNTHETIC_CATEGORIES)} in the dataset categories"
        )
    if seed < 0:
        raise DdadError(f"synthetic dataset seed {seed} is negative: use a seed >= 0")
    if image_size < 32:
        raise DdadError(f"synthetic image_size {image_size} is too small: use 32 or more")
    counts = {"train": n_train, "test_good": n_test_good, "test_defect": n_test_defect}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in categories:
        with progress_bar(
            total=sum(counts.values()), desc=f"synthetic {category}", disable=not progress
        ) as bar:
            write = partial(_write_category, category, seed, image_size, counts, bar)
            replace_folder(root / category, write)
