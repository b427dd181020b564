"""score@<category>: anomaly maps and image scores.

``score.map: reconstruction`` scores what did not come back from the stored reconstructions;
``features`` scores each patch by its distance to the nearest patch of the good training images
in the trained UNet's feature space (ddad.maps.features), reading the model and training images; the
map and its image score are divided by that distance's typical value at each position (the
map by its mean only with ``score.divide_map: false``; ddad.maps.scoring.finished). With several
ranks the UNet passes are shared (ddad.diffusion.distributed.sharded_map) and rank 0 writes the
outputs.
Writes runs/<category>/score/scores.csv (one row per test and held-out good image: key, split,
label, defect, score), maps.npz (test maps and ground truth for evaluate and plot; ``has_truth``
false where a defective image has no mask, and so an all-False one) and
summary.json (UNet passes per image the maps took, for evaluate's cost figure; the wall time is
printed, not stored, so that a re-run writes the same bytes).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from ddad.data.layout import test_images
from ddad.diffusion import distributed
from ddad.diffusion.engine import prepare_model, resolve_device
from ddad.diffusion.models import load_trained
from ddad.diffusion.store import ResultStore
from ddad.maps.comparison import compared_map
from ddad.maps.features import (
    FeatureSource,
    feature_anomaly_maps,
    feature_source,
    training_reference,
    unet_passes,
)
from ddad.maps.scoring import ScoreSettings, anomaly_map, finished
from stages.common import (
    DATA_DIR,
    RUNS_DIR,
    TRAINED_DIR,
    load_model_input,
    run_stage,
    wall_time,
    write_json,
)


def reconstruction_map(result: dict[str, np.ndarray], settings: ScoreSettings) -> np.ndarray:
    """The error map of one stored reconstruction result."""
    return anomaly_map(
        torch.from_numpy(result["image"]),
        torch.from_numpy(result["reconstructions"].astype(np.float32)),
        sigma=settings.sigma,
        kernel_size=settings.kernel_size,
        error=settings.error,
    ).numpy()


def trained_source(
    params: dict[str, Any], category: str, settings: ScoreSettings
) -> tuple[FeatureSource, dict[str, Any]]:
    """The features ``settings.backbone`` names, on params' device, and the trained model's
    meta.json."""
    model, _, meta = load_trained(TRAINED_DIR / category)
    return feature_source(prepare_model(model, resolve_device(params["device"])), settings), meta


def comparison_mapper(
    params: dict[str, Any], category: str, settings: ScoreSettings
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """What turns one stored reconstruction result into DDAD's map (ddad.maps.comparison)."""
    source, _ = trained_source(params, category, settings)
    return lambda result: compared_map(source, result["image"], result["reconstructions"], settings)


def feature_mapper(
    params: dict[str, Any], category: str, settings: ScoreSettings
) -> tuple[Callable[[list[np.ndarray]], list[np.ndarray]], np.ndarray | None]:
    """What turns images ([C, H, W] at model size) into nearest-good-feature maps, blurred like
    errors, and the typical map that ``finished`` divides them by; the good reference they
    come from is built here, once."""
    source, meta = trained_source(params, category, settings)
    reference = training_reference(
        source,
        DATA_DIR,
        meta,
        lambda path: load_model_input(path, meta["channels"], params),
        settings,
        over_batches=distributed.sharded_map,
    )

    def mapped(images: list[np.ndarray]) -> list[np.ndarray]:
        return feature_anomaly_maps(
            source,
            images,
            reference,
            settings.sigma,
            settings.kernel_size,
            desc=f"score@{category}" if distributed.is_leader() else None,
            over_batches=distributed.sharded_map,
        )

    return mapped, reference.typical


def category_maps(params: dict[str, Any], category: str) -> dict[str, Any]:
    """Maps, masks, labels and scores of a category's test and validation images, and what
    they cost in UNet passes per image beyond the reconstruct stage's (the good reference apart)."""
    recon = RUNS_DIR / category / "recon"
    summary = json.loads((recon / "summary.json").read_text())
    store = ResultStore(recon, summary["digest"])
    settings = ScoreSettings(**params["score"])
    keys = [(split, key) for split in ("test", "validation") for key in summary[split]]
    features = settings.map == "features"
    typical = None
    if features:
        mapped, typical = feature_mapper(params, category, settings)
        loaded = [
            store.load(key, ("image", "label", "mask") if split == "test" else ("image",))
            for split, key in keys
        ]
    start = time.perf_counter()
    if features:
        scored = zip(mapped([r["image"] for r in loaded]), loaded, strict=True)
    else:  # one stored result in memory at a time
        per_result = (
            comparison_mapper(params, category, settings)
            if settings.map == "ddad"
            else lambda result: reconstruction_map(result, settings)
        )
        scored = ((per_result(r), r) for r in (store.load(key) for _, key in keys))
    rows, maps, masks = [], [], []
    for (split, key), (raw, result) in zip(keys, scored, strict=True):
        is_test = split == "test"
        amap, score = finished(raw, settings, typical)
        rows.append(
            {
                "key": key,
                "split": split,
                "label": int(result["label"]) if is_test else 0,
                "defect": key.split("/")[1] if is_test else "good",
                "score": score,
            }
        )
        if is_test:
            maps.append(amap.astype(np.float32))
            masks.append(result["mask"])
    print(wall_time(f"score@{category}", start, len(keys)), file=sys.stderr)
    cost = {"nfe_per_image": float(unet_passes(settings, params["reconstruct"]["ensemble"]))}
    return {"rows": rows, "maps": np.stack(maps), "masks": np.stack(masks), "cost": cost}


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    if params["score"]["map"] != "features" and not distributed.is_leader():
        return  # no search to share: the maps come from the stored reconstructions
    result = category_maps(params, category)
    if not distributed.is_leader():
        return
    out = RUNS_DIR / category / "score"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["rows"]).to_csv(out / "scores.csv", index=False, float_format="%.8g")
    keys = [r["key"] for r in result["rows"] if r["split"] == "test"]
    # which masks are ground truth: a defective image without a mask has all False (plot)
    known = {f"test/{item.key}": item.has_truth for item in test_images(DATA_DIR, category)}
    np.savez_compressed(
        out / "maps.npz",
        keys=np.array(keys),
        maps=result["maps"],
        masks=result["masks"],
        has_truth=np.array([known[key] for key in keys]),
    )
    write_json(out / "summary.json", result["cost"])
    print(f"score@{category}: {len(keys)} test maps")


if __name__ == "__main__":
    run_stage(main, sharded=True)
