"""MVTec AD: which categories exist, and fetching them into an MVTec-layout folder."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ddad.archive import safe_extract
from ddad.download import download
from ddad.errors import DdadError

_OBJECTS = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_CATEGORIES: dict[str, str] = {
    **dict.fromkeys(_OBJECTS, "object"),
    **dict.fromkeys(_TEXTURES, "texture"),
}

# Per-category archives; the publisher gives no checksum for these.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
    "420938113-1629952094/{category}.tar.xz"
)
# Documented checksum of the full archive (mvtec_anomaly_detection.tar.xz, all categories).
MVTEC_FULL_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"

_OFFLINE_HINT = (
    "set data.source: folder and data.root: <path to an MVTec-layout folder> "
    "to use data you already have"
)
_CATEGORY_FOLDERS = ("train/good", "test", "ground_truth")


def fetch_mvtec(
    categories: Sequence[str],
    root: Path,
    *,
    url_template: str = MVTEC_URL,
    sha256: Mapping[str, str] | None = None,
    cache: Path | None = None,
    progress: bool = True,
) -> None:
    """Make `root/<category>` hold each category, downloading only those not there yet.

    Archives are kept in `cache` (default `root/.downloads`) so a failed extraction never costs
    a second download; a category folder appears only complete, by one rename.
    """
    root = Path(root)
    unknown = [name for name in categories if name not in MVTEC_CATEGORIES]
    if unknown:
        raise DdadError(
            f"unknown MVTec AD categories {', '.join(unknown)}; "
            f"choose from: {', '.join(MVTEC_CATEGORIES)}"
        )
    cache = Path(cache) if cache is not None else root / ".downloads"
    pins = sha256 or {}
    for category in categories:
        if _is_complete(root / category):
            continue
        archive = cache / f"{category}.tar.xz"
        download(
            url_template.format(category=category),
            archive,
            sha256=pins.get(category),
            progress=progress,
            hint=_OFFLINE_HINT,
        )
        _install(archive, category, root)


def _is_complete(folder: Path) -> bool:
    """Whether `folder` is a fetched category; a partial one is refused rather than mixed into."""
    if not folder.exists():
        return False
    missing = [name for name in _CATEGORY_FOLDERS if not (folder / name).is_dir()]
    if missing:
        raise DdadError(
            f"{folder} exists but lacks {', '.join(missing)}, so it is not a complete MVTec AD "
            "category; delete it to download it again"
        )
    return True


def _install(archive: Path, category: str, root: Path) -> None:
    """Extract `archive` beside `root/<category>` and move its `<category>/` folder in by rename."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{category}.", dir=root) as staging:
        extracted = Path(staging) / "archive"
        safe_extract(archive, extracted)
        source = extracted / category
        if not source.is_dir():
            raise DdadError(
                f"{archive} has no top-level '{category}/' folder; delete it and download it again"
            )
        source.rename(root / category)
