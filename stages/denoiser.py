"""denoiser@<category>: the feature denoiser that ``score.map`` inversion and
feature_reconstruction read (and ``fused`` with either), trained on good images only.

It learns from the bank images of the nearest-patch search (the training images apart from the
held-out ones and the typical map's, ddad.maps.good_images), chosen from the file list and
train.val_images / train.seed as the train stage chooses them, so it does not wait for the
UNet. Their backbone features are whitened over all of them (ddad.maps.denoiser) and the
denoiser trained on crops of that grid (ddad.diffusion.train: resumable, over every rank of
dist). Writes models/denoisers/<category>/denoiser.pt and meta.json (the loss curve).

For a map that reads no denoiser it writes meta.json alone, the same bytes whatever the other
settings, so that the score stage, which depends on this folder, is not re-run by them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from ddad.data.layout import DATA_DIR, DENOISERS_DIR, dataset_channels, split_train_val
from ddad.data.layout import train_images as training_paths
from ddad.diffusion import distributed
from ddad.diffusion.engine import resolve_device
from ddad.diffusion.train import training_fingerprint
from ddad.maps.denoiser import DENOISER_FILE, new_denoiser, train_denoiser, whitened_features
from ddad.maps.good_images import batches, good_split
from ddad.maps.kinds import kind_class
from ddad.maps.sources import feature_source
from ddad.params import denoiser_settings, input_size, score_settings
from stages.common import load_model_input, model_channels, run_stage, sized, write_json
from stages.resume import checkpoint_path, interrupted_training, resume_from

NOT_NEEDED = {"trained": False, "why": "score.map reads no feature denoiser"}


def _checkpoint(category: str) -> Path:
    return checkpoint_path(f"denoiser-{category}")


def _interrupted(argv: list[str]) -> str:
    category = argv[0]
    return interrupted_training(
        f"denoiser@{category}", _checkpoint(category), DENOISERS_DIR / category
    )


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    settings = score_settings(params)
    out = DENOISERS_DIR / category
    if not kind_class(settings.map).needs_denoiser(settings):
        if distributed.is_leader():
            shutil.rmtree(out, ignore_errors=True)
            write_json(out / "meta.json", NOT_NEEDED)
        return
    params = sized(params, input_size(params, DATA_DIR, category).size)
    channels = model_channels(params, dataset_channels(DATA_DIR, category))
    train = params["train"]
    fit, _ = split_train_val(training_paths(DATA_DIR, category), train["val_images"], train["seed"])
    bank = good_split(fit, settings.bank_images, settings.reference_images).bank
    device = resolve_device(params["device"])
    source = feature_source(settings, device)
    images = [load_model_input(path, channels, params) for path in bank]
    features, whitening = whitened_features(distributed.sharded_map(source, batches(images)))
    chosen = denoiser_settings(params)
    config = chosen.train_config()
    model = new_denoiser(features.shape[1], chosen.shape, chosen.seed)
    ranks = distributed.world_size()
    fingerprint = training_fingerprint(model, features, None, config, device, ranks)
    stage = f"denoiser@{category}"
    resume = resume_from(_checkpoint(category), fingerprint, stage)
    if distributed.is_leader():
        grid = " x ".join(str(side) for side in features.shape[1:])
        start = f", resuming at step {resume.state['step']}" if resume.state else ""
        print(f"{stage}: {len(bank)} images' features ({grid}), {config.steps} steps{start}")
    trained, log = train_denoiser(
        model,
        features,
        whitening,
        config,
        device=device,
        resume=resume,
        progress=distributed.is_leader(),
    )
    if not distributed.is_leader():
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    trained.save(out / DENOISER_FILE)
    meta = {
        "trained": True,
        "category": category,
        "images": len(bank),
        "features": list(features.shape[1:]),
        "loss": [{"step": step, "loss": value} for step, value in log.train],
    }
    write_json(out / "meta.json", meta)
    shutil.rmtree(_checkpoint(category).parent, ignore_errors=True)
    print(f"{stage}: saved {out / DENOISER_FILE}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main, sharded=True, interrupted=_interrupted)
