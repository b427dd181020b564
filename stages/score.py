"""score@<category>: anomaly maps and image scores.

The map kind ``score.map`` names (ddad.maps.kinds) makes each map: the default scores each
patch against the nearest good patch in a pretrained backbone's features, learnt here from the
training images; the others compare the stored reconstructions with their inputs. Every map is
finished the same way (ddad.maps.scoring.finished). The trained UNet is loaded only when the
kind reads its features. With several ranks the network passes are shared
(ddad.diffusion.distributed.sharded_map) and rank 0 writes the outputs.
A kind that learns from good images also scores the training images k-fold (``detect.folds``),
each fold against a reference fitted on the others, for the detect threshold
(ddad.maps.threshold). Writes runs/<category>/score/scores.csv (one row per test, held-out
good and k-fold training image: key, split test/validation/good_fold, label, defect, score),
maps.npz (test maps and ground truth for evaluate and plot; ``has_truth``
false where a defective image has no mask, and so an all-False one; a category without test
images yet has its held-out good images' maps there, for plot) and summary.json (the UNet
and backbone passes per image the maps took, for evaluate's cost figures; the wall time is
printed, not stored, so that a re-run writes the same bytes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddad.data.layout import DATA_DIR, DENOISERS_DIR, RUNS_DIR, TRAINED_DIR, test_images
from ddad.diffusion import distributed
from ddad.diffusion.engine import prepare_model, resolve_device
from ddad.diffusion.models import load_trained, trained_meta
from ddad.diffusion.store import ResultStore
from ddad.maps.denoiser import DENOISER_FILE, TrainedDenoiser
from ddad.maps.good_images import (
    BATCH,
    fit_images,
    fold_splits,
    split_images,
    training_split,
)
from ddad.maps.kinds import MapInput, MapKind, kind_class
from ddad.params import detect_settings, score_settings
from ddad.progress import progress_bar
from stages.common import load_model_input, run_stage, sized, wall_time, write_json

CHUNK = 4 * BATCH  # stored results in memory at once, whole network batches


def fitted_kind(params: dict[str, Any], category: str) -> tuple[MapKind, list[dict[str, Any]]]:
    """The map kind of params' ``score`` section on params' device, having learnt from the
    category's good training images when it does, and the rows of those images' own scores
    (``fold_rows``); the trained UNet and the feature denoiser loaded only if the kind reads
    them."""
    settings = score_settings(params)
    device = resolve_device(params["device"])
    trained = TRAINED_DIR / category
    kind = kind_class(settings.map)
    unet = prepare_model(load_trained(trained)[0], device) if kind.needs_unet(settings) else None
    denoiser = None
    if kind.needs_denoiser(settings):
        denoiser = TrainedDenoiser.load(DENOISERS_DIR / category / DENOISER_FILE)
    maps = kind(settings, device, unet, denoiser)
    if not maps.learns_from_good_images:
        return maps, []
    meta = trained_meta(trained)
    read_as = sized(params, meta["image_size"])
    paths = fit_images(DATA_DIR, meta)
    inputs = {path: load_model_input(path, meta["channels"], read_as) for path in paths}
    rows = fold_rows(maps, inputs, detect_settings(params).folds)
    split = training_split(DATA_DIR, meta, settings)
    maps.fit(split_images(split, inputs.__getitem__), over_batches=distributed.sharded_map)
    return maps, rows


def fold_rows(kind: MapKind, inputs: dict[Path, np.ndarray], folds: int) -> list[dict[str, Any]]:
    """scores.csv rows (split ``good_fold``) of the good training images ``inputs``, each fold
    scored by ``kind`` fitted on the others alone (ddad.maps.good_images.fold_splits): good
    scores for the threshold beyond the few held-out images, none of them scored against a
    reference that holds it. Leaves ``kind`` fitted on the last fold's reference."""
    rows = []
    for scored, split in fold_splits(list(inputs), folds, kind.settings):
        kind.fit(split_images(split, inputs.__getitem__), over_batches=distributed.sharded_map)
        raws = kind.raw_maps(
            [MapInput(inputs[p]) for p in scored], over_batches=distributed.sharded_map
        )
        rows += [
            {"key": f"train/{p.stem}", "split": "good_fold", "label": 0, "defect": "good"}
            | {"score": kind.finish(raw)[1]}
            for p, raw in zip(scored, raws, strict=True)
        ]
    return rows


def category_maps(params: dict[str, Any], category: str) -> dict[str, Any]:
    """Maps, masks, labels and scores of a category's test and validation images, the scores
    of its training images k-fold, and what the maps cost in network passes per image beyond
    the reconstruct stage's (the good reference apart)."""
    recon = RUNS_DIR / category / "recon"
    summary = json.loads((recon / "summary.json").read_text())
    store = ResultStore(recon, summary["digest"])
    kind, rows = fitted_kind(params, category)
    keys = [(split, key) for split in ("test", "validation") for key in summary[split]]
    drawn = "test" if summary["test"] else "validation"  # whose maps maps.npz keeps
    compared = ("reconstructions",) if kind.compares_reconstructions else ()
    maps, masks = [], []
    leader = distributed.is_leader()
    bar = progress_bar(total=len(keys), desc=f"score@{category}", unit="image", disable=not leader)
    start = time.perf_counter()
    for first in range(0, len(keys), CHUNK):
        chunk = keys[first : first + CHUNK]
        loaded = [
            store.load(key, ("image", *compared, *(("label", "mask") if split == "test" else ())))
            for split, key in chunk
        ]
        inputs = [MapInput(r["image"], r.get("reconstructions")) for r in loaded]
        raws = kind.raw_maps(inputs, over_batches=distributed.sharded_map)
        for (split, key), raw, result in zip(chunk, raws, loaded, strict=True):
            is_test = split == "test"
            amap, score = kind.finish(raw)
            rows.append(
                {
                    "key": key,
                    "split": split,
                    "label": int(result["label"]) if is_test else 0,
                    "defect": key.split("/")[1] if is_test else "good",
                    "score": score,
                }
            )
            if split == drawn:
                maps.append(amap.astype(np.float32))
                masks.append(result.get("mask", np.zeros(amap.shape, dtype=bool)))
        bar.update(len(chunk))
    bar.close()
    if leader:
        print(wall_time(f"score@{category}", start, len(keys)), file=sys.stderr)
    cost = kind.cost(params["reconstruct"]["ensemble"])
    passes = {
        "nfe_per_image": cost.unet_passes,
        "backbone_passes_per_image": cost.backbone_passes,
        "denoiser_passes_per_image": cost.denoiser_passes,
    }
    return {
        "rows": rows,
        "drawn": drawn,
        "maps": np.stack(maps),
        "masks": np.stack(masks),
        "cost": passes,
    }


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    result = category_maps(params, category)
    if not distributed.is_leader():
        return
    out = RUNS_DIR / category / "score"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["rows"]).to_csv(out / "scores.csv", index=False, float_format="%.8g")
    keys = [r["key"] for r in result["rows"] if r["split"] == result["drawn"]]
    # which masks are ground truth: a defective image without a mask has all False (plot); a
    # held-out good image's, all False, is
    known = {f"test/{item.key}": item.has_truth for item in test_images(DATA_DIR, category)}
    np.savez_compressed(
        out / "maps.npz",
        keys=np.array(keys),
        maps=result["maps"],
        masks=result["masks"],
        has_truth=np.array([known.get(key, True) for key in keys]),
    )
    write_json(out / "summary.json", result["cost"])
    print(f"score@{category}: {len(keys)} {result['drawn']} maps")


if __name__ == "__main__":
    run_stage(main, sharded=True)
