"""reconstruct@<category>: noise every test image (and the held-out good images) to t and denoise.

A map kind that compares with reconstructions (``score.map: reconstruction`` or ``ddad``) gets
the ``reconstruct`` plan in full. One that reads the input alone (``features``, the default;
ddad.maps.kinds) gets each image stored as the model sees it, with no UNet pass; the plot stage
draws the x0 picture of the few it shows.

Per-image results go to runs/<category>/recon/<settings digest>/ as they finish, so a killed run
resumes where it stopped and a result made with other settings is never reused. Images are read
at the input size train chose (meta.json). A category without test images yet stores its
held-out good images alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import ddad.diffusion.engine
import ddad.diffusion.reconstruct
from ddad.data.download import sha256_file
from ddad.data.layout import DATA_DIR, RUNS_DIR, TRAINED_DIR, TestImage, test_images
from ddad.diffusion import distributed
from ddad.diffusion.engine import prepare_model, resolve_device, run
from ddad.diffusion.models import load_trained, trained_meta
from ddad.diffusion.reconstruct import picture_title
from ddad.diffusion.store import ResultStore, settings_digest
from ddad.maps.kinds import kind_class
from ddad.params import plan_from
from stages.common import (
    load_model_input,
    load_test_mask,
    run_stage,
    sized,
    wall_time,
    write_json,
)


def _input_digest(path: Path, item: TestImage | None) -> str:
    """What a stored result was made from: the image file and, for a test image, its mask."""
    mask = item.mask if item else None
    return sha256_file(path) + (sha256_file(mask) if mask else "")


def _input_side(meta: dict[str, Any]) -> dict[str, Any]:
    """What of a trained model the stored inputs alone depend on (no reconstruction): the
    channels they are read with and which good images are held out, not the weights, so a
    retraining that keeps both rewrites nothing."""
    return {k: meta[k] for k in ("channels", "validation_images")}


def _leader_opened(root: Path, settings: dict[str, Any], keys: set[str]) -> ResultStore:
    """The store for ``settings``, opened and pruned to ``keys`` by the leader alone while the
    other ranks wait (two ranks clearing one folder would race)."""
    if distributed.is_leader():
        ResultStore.open(root, settings).prune(keys)
    distributed.barrier()
    return ResultStore(root, settings_digest(settings))


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    device = resolve_device(params["device"])
    kind = kind_class(params["score"]["map"])
    plan = kind.reconstruction_plan(plan_from(params, category))
    trained = TRAINED_DIR / category
    model, diffusion, meta = load_trained(trained) if plan else (None, None, trained_meta(trained))
    params = sized(params, meta["image_size"])
    data = {k: params["data"][k] for k in ("image_size", "resize", "normalization", "mask_resize")}
    settings = {
        "model": sha256_file(trained / "model.pt") if plan else _input_side(meta),
        "data": data,
        "plan": plan.__dict__ if plan else None,
        "seed": params["reconstruct"]["seed"],
        "device": device.type,
        # the sampler's own code: a changed sampler must not reuse results of the old one
        "code": [
            sha256_file(Path(module.__file__))
            for module in (ddad.diffusion.reconstruct, ddad.diffusion.engine)
        ],
    }
    channels = meta["channels"]
    tests = {f"test/{item.key}": item for item in test_images(DATA_DIR, category)}
    vals = {f"val/{Path(p).stem}": DATA_DIR / p for p in meta["validation_images"]}
    paths = {key: item.path for key, item in tests.items()} | vals
    sources = {key: _input_digest(path, tests.get(key)) for key, path in paths.items()}
    store = _leader_opened(RUNS_DIR / category / "recon", settings, set(paths))
    todo = [k for k in paths if not store.has(k, sources[k])]
    distributed.barrier()  # every rank has read the same to-do list before any rank writes
    how = (
        f"{plan.sampler} from t={plan.timesteps}, ensemble {plan.ensemble}"
        if plan
        else f"inputs only (score.map: {kind.name} reads no reconstruction)"
    )
    if distributed.is_leader():
        print(
            f"reconstruct@{category}: {len(paths)} images ({len(paths) - len(todo)} already "
            f"done), {how}, device {device}, {distributed.world_size()} process(es)",
            file=sys.stderr,
        )
    items = [(k, lambda p=paths[k]: load_model_input(p, channels, params)) for k in todo]
    started = time.perf_counter()
    results = run(
        prepare_model(model, device) if model else None,
        diffusion,
        items,
        plan,
        seed=params["reconstruct"]["seed"],
        batch_size=params["reconstruct"]["batch_size"],
        device=device,
        desc=f"reconstruct@{category}",
        progress=distributed.is_leader(),
        share=distributed.share,
    )
    for result in results:
        extra = {}
        if result.key in tests:
            item = tests[result.key]
            extra = {"label": np.int64(item.label), "mask": load_test_mask(item, params)}
        if result.reconstructions is not None:
            extra |= {
                "reconstructions": result.reconstructions.astype(np.float16),
                "timesteps": result.timesteps,
            }
        store.save(
            result.key,
            source=np.str_(sources[result.key]),
            image=result.image,
            nfe=np.float64(result.nfe),
            **extra,
        )
    distributed.barrier()  # every rank's images are stored
    if not distributed.is_leader():
        return
    if todo:
        print(wall_time(f"reconstruct@{category}", started, len(todo)), file=sys.stderr)
    costs = [store.load(k, ("nfe",)) for k in tests or vals]  # no test images: the held-out's
    write_json(
        RUNS_DIR / category / "recon" / "summary.json",
        {
            "digest": store.digest,
            "device": device.type,
            "picture": picture_title(plan) if plan else None,
            "nfe_per_image": float(np.mean([float(c["nfe"]) for c in costs])),
            "test": sorted(tests),
            "validation": sorted(vals),
        },
    )


if __name__ == "__main__":
    run_stage(main, sharded=True)
