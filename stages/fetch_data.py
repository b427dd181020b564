"""fetch_data: make the dataset available under data/ and describe it in data/dataset.json.

synthetic generates it here, mvtec downloads the chosen categories, folder validates a user's
own MVTec-layout folder and reads it in place (nothing is copied).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ddad.errors import DdadError
from ddad.layout import dataset_channels, validate_category
from ddad.mvtec import MVTEC_CATEGORIES, fetch_mvtec
from ddad.synthetic import SYNTHETIC_CATEGORIES, generate_dataset
from stages.common import DATA_DIR, MANIFEST, run_stage, write_json


def _check_known(categories: list[str], known: dict[str, str], source: str) -> None:
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise DdadError(
            f"data.categories: {unknown[0]!r} is not a {source} category; "
            f"choose from {', '.join(known)}"
        )


def _prepare(data: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """Produce the images for the chosen source; return where they are and each category's type."""
    categories = data["categories"]
    if data["source"] == "synthetic":
        _check_known(categories, SYNTHETIC_CATEGORIES, "synthetic")
        if DATA_DIR.exists():
            shutil.rmtree(DATA_DIR)
        syn = data["synthetic"]
        generate_dataset(
            DATA_DIR,
            categories,
            seed=syn["seed"],
            n_train=syn["train"],
            n_test_good=syn["test_good"],
            n_test_defect=syn["test_defect"],
        )
        return DATA_DIR, {c: SYNTHETIC_CATEGORIES[c] for c in categories}
    if data["source"] == "mvtec":
        _check_known(categories, MVTEC_CATEGORIES, "MVTec AD")
        fetch_mvtec(categories, DATA_DIR, sha256=data["mvtec_sha256"], cache=Path("data/downloads"))
        return DATA_DIR, {c: MVTEC_CATEGORIES[c] for c in categories}
    if not data["root"]:
        raise DdadError(
            "data.root: empty; with data.source folder, set it to your dataset's folder"
        )
    root = Path(data["root"]).expanduser().resolve()
    if not root.is_dir():
        raise DdadError(f"data.root: {root} is not a folder; point it at an MVTec-layout dataset")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "README.txt").write_text(
        f"data.source is folder: images are read in place from {root}\n"
    )
    return root, {c: data["category_types"].get(c, "texture") for c in categories}


def main(params: dict[str, Any], argv: list[str]) -> None:
    data = params["data"]
    root, types = _prepare(data)
    categories = {}
    for category in data["categories"]:
        validate_category(root, category)
        categories[category] = {
            "type": types[category],
            "channels": dataset_channels(root, category),
        }
    write_json(MANIFEST, {"source": data["source"], "root": str(root), "categories": categories})
    print(f"fetch_data: {len(categories)} categories from {data['source']} at {root}")


if __name__ == "__main__":
    run_stage(main)
