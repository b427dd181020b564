"""A small archive shaped like MVTec AD's: every category folder at its top level, beside a
licence file, with images of MVTec's sizes and modes (screw: 1024 px grayscale, bottle: 900 px
RGB) but only a few of them, so that tests stay fast."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = {"bottle": (900, "RGB"), "screw": (1024, "L")}
DEFECT = "broken"


def _png(size: int, mode: str, seed: int, spot: bool = False) -> bytes:
    """Horizontal bands (tiny as a PNG, quick to write), with a dark square when `spot`."""
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    rows = (120 + 60 * np.sin(np.linspace(0, 12, size) + phase)).astype(np.uint8)
    pixels = np.repeat(rows[:, None], size, axis=1)
    if spot:
        pixels[size // 3 : size // 2, size // 3 : size // 2] = 10
    picture = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _mask(size: int) -> bytes:
    pixels = np.zeros((size, size), np.uint8)
    pixels[size // 3 : size // 2, size // 3 : size // 2] = 255
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def category_files(category: str, train: int) -> dict[str, bytes]:
    """Relative path -> bytes of one category in MVTec layout."""
    size, mode = CATEGORIES[category]
    files = {f"train/good/{i:03d}.png": _png(size, mode, i) for i in range(train)}
    files["test/good/000.png"] = _png(size, mode, 100)
    files[f"test/{DEFECT}/000.png"] = _png(size, mode, 101, spot=True)
    files[f"ground_truth/{DEFECT}/000_mask.png"] = _mask(size)
    return files


def make_mvtec_archive(path: Path, train: int = 10) -> Path:
    """Write the .tar.xz at `path`: license.txt and `<category>/...` for each category."""
    members = {"license.txt": b"test data in MVTec AD's layout\n"}
    for category in CATEGORIES:
        members |= {f"{category}/{k}": v for k, v in category_files(category, train).items()}
    with tarfile.open(path, "w:xz", preset=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
