"""MVTec AD: which categories exist, and one category out of the data set's single archive."""

from __future__ import annotations

import tempfile
import urllib.parse
from functools import partial
from pathlib import Path, PurePosixPath

from ddad.data.archive import safe_extract
from ddad.data.download import download
from ddad.data.folders import replace_folder
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

MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
# The whole data set in one archive (4.9 GB, every category at its top level). The host gives
# each file its own link and has moved this one before, so the URL can be overridden; the
# checksum is the publisher's and pins the archive whatever the link.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/download/"
    "420938113-1629960298/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"


def archive_path(url: str, downloads: Path) -> Path:
    """Where the archive at `url` is kept: `downloads/<the URL's file name>`. An archive put
    there by hand is used as it is, without network."""
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    return Path(downloads) / (name or PurePosixPath(MVTEC_URL).name)


def fetch_category(
    category: str,
    dest: Path,
    *,
    downloads: Path,
    url: str = MVTEC_URL,
    sha256: str | None = None,
    progress: bool = True,
    hint: str = "",
) -> str:
    """Make `dest` hold MVTec AD's `category`, replacing what was there; return the archive's
    sha256.

    The archive is downloaded once into `downloads` (resumable, retried) and kept there, so each
    further category costs one pass through it and no network. The built-in URL's archive is
    always checked against its known checksum, another URL's against `sha256` when given.
    `hint` ends the one-line error of a failed download (where else to get the data).
    """
    if category not in MVTEC_CATEGORIES:
        raise DdadError(
            f"unknown MVTec AD category {category!r}; choose from: {', '.join(MVTEC_CATEGORIES)}"
        )
    archive = archive_path(url, downloads)
    expected = MVTEC_SHA256 if url == MVTEC_URL else sha256
    digest = download(url, archive, sha256=expected, progress=progress, hint=hint)
    replace_folder(Path(dest), partial(_extract_category, archive, category))
    return digest


def _extract_category(archive: Path, category: str, new: Path) -> None:
    """Extract the archive's top-level `<category>/` folder, alone, to the new path `new`."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=new.parent) as scratch:
        extracted = Path(scratch) / "archive"
        safe_extract(archive, extracted, only=category)
        if not (extracted / category).is_dir():
            raise DdadError(
                f"{archive} has no top-level '{category}/' folder, so it is not MVTec AD's "
                "archive; delete it and download it again"
            )
        (extracted / category).rename(new)
