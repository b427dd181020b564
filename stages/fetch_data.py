"""fetch_data@<category>: one category's images in data/images/<category>, in MVTec layout.

Each category has its own stage, so adding one fetches that one alone. synthetic generates it
(each category from the seed alone, whatever the others are); mvtec extracts it from MVTec AD's
archive, downloaded once into data/downloads/ (outside every stage output, so it survives);
folder copies it from data.root (data/own by default). The copy is the stage's output, which
DVC versions and may delete; your folder is only read, never an output, so no DVC command can
remove it. Every fetch_data stage depends on data.root, so an edit there re-runs the copies.
A category of good parts only (train/good, no test images yet) is fetched as it is.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

from ddad.data.folders import replace_folder
from ddad.data.layout import DATA_DIR, test_images, train_images, validate_category
from ddad.data.mvtec import MVTEC_PAGE, MVTEC_URL, archive_path, fetch_category
from ddad.data.synthetic import generate_dataset
from stages.common import run_stage

DOWNLOADS = Path("data/downloads")


def _generate(data: dict[str, Any], category: str) -> str:
    syn = data["synthetic"]
    generate_dataset(
        DATA_DIR,
        [category],
        seed=syn["seed"],
        n_train=syn["train"],
        n_test_good=syn["test_good"],
        n_test_defect=syn["test_defect"],
    )
    validate_category(DATA_DIR, category)
    return f"generated with seed {syn['seed']}"


def _extract_mvtec(data: dict[str, Any], category: str) -> str:
    url = data["mvtec_url"] or MVTEC_URL
    archive = archive_path(url, DOWNLOADS)
    hint = (
        f"Get MVTec AD at {MVTEC_PAGE} and put mvtec_anomaly_detection.tar.xz at {archive}, "
        "or set data.source: folder and data.root: <your extracted MVTec AD folder>; "
        "if the archive has moved, set data.mvtec_url"
    )
    pin = data["mvtec_sha256"] or None
    digest = fetch_category(
        category, DATA_DIR / category, downloads=DOWNLOADS, url=url, sha256=pin, hint=hint
    )
    validate_category(DATA_DIR, category)
    if url != MVTEC_URL and pin is None:
        return f"extracted from {archive} (sha256 {digest}: pin it in data.mvtec_sha256)"
    return f"extracted from {archive} (sha256 verified)"


def _take_folder(data: dict[str, Any], category: str) -> str:
    root = Path(data["root"]).expanduser()
    validate_category(root, category)
    replace_folder(DATA_DIR / category, partial(shutil.copytree, root / category))
    return f"copied from {root / category} (your folder is read, never changed)"


# Each source leaves data/images/<category> checked (ddad.data.layout.validate_category) where
# its files come in: your folder before it is copied, so an error names your file, and what
# generation or extraction wrote.
SOURCES = {"synthetic": _generate, "mvtec": _extract_mvtec, "folder": _take_folder}


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    how = SOURCES[params["data"]["source"]](params["data"], category)
    count = len(train_images(DATA_DIR, category))
    said = "" if test_images(DATA_DIR, category) else "; no test images yet: nothing to measure"
    print(f"fetch_data@{category}: {count} training images, {how}{said}")


if __name__ == "__main__":
    run_stage(main)
