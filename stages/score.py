"""score@<category>: anomaly maps and image scores from the stored reconstructions.

Writes runs/<category>/score/scores.csv (one row per test and held-out good image: key, split,
label, defect, score) and maps.npz (test maps and ground truth for evaluate and plot).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch

from ddad.scoring import anomaly_map, image_score
from ddad.store import ResultStore
from stages.common import RUNS_DIR, run_stage


def category_maps(params: dict[str, Any], category: str) -> dict[str, Any]:
    """Maps, masks, labels and scores of a category's test and validation images."""
    recon = RUNS_DIR / category / "recon"
    summary = json.loads((recon / "summary.json").read_text())
    store = ResultStore(recon, summary["digest"])
    sp = params["score"]
    rows, maps, masks = [], [], []
    for split in ("test", "validation"):
        for key in summary[split]:
            result = store.load(key)
            amap = anomaly_map(
                torch.from_numpy(result["image"]),
                torch.from_numpy(result["reconstructions"].astype(np.float32)),
                sigma=sp["sigma"],
                kernel_size=sp["kernel_size"],
                error=sp["error"],
            ).numpy()
            score = image_score(amap, sp["image_score"], sp["top_fraction"])
            label = int(result["label"]) if split == "test" else 0
            rows.append(
                {
                    "key": key,
                    "split": split,
                    "label": label,
                    "defect": key.split("/")[1] if split == "test" else "good",
                    "score": score,
                }
            )
            if split == "test":
                maps.append(amap.astype(np.float32))
                masks.append(result["mask"])
    return {"rows": rows, "maps": np.stack(maps), "masks": np.stack(masks)}


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    result = category_maps(params, category)
    out = RUNS_DIR / category / "score"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["rows"]).to_csv(out / "scores.csv", index=False, float_format="%.8g")
    keys = [r["key"] for r in result["rows"] if r["split"] == "test"]
    np.savez_compressed(
        out / "maps.npz", keys=np.array(keys), maps=result["maps"], masks=result["masks"]
    )
    print(f"score@{category}: {len(keys)} test maps")


if __name__ == "__main__":
    run_stage(main)
