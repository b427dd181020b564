"""The kinds that read the feature denoiser (inversion, feature_reconstruction) and the fused
map, on generated stripes with a planted blot: a tiny denoiser trained on good images' Lite0
features, the maps fitted on other good ones, every defective image above every good one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ddad.errors import DdadError
from ddad.maps.denoiser import (
    DenoiserSettings,
    TrainedDenoiser,
    new_denoiser,
    train_denoiser,
    whitened_features,
)
from ddad.maps.good_images import GoodImages
from ddad.maps.kinds import MapInput, map_kind
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import Cost, feature_source

SIZE = 64
CPU = torch.device("cpu")
SETTINGS = ScoreSettings(reference_images=8, inversion_steps=3, feature_steps=2)
TINY = DenoiserSettings(steps=150, batch_size=8, lr=3e-3, crop=8, width=32, blocks=3)


def _stripes(rng: np.random.Generator, blot: bool = False) -> np.ndarray:
    """Gray stripes at a random phase with a little noise, in [-1, 1]; a dark blot if asked."""
    columns = np.arange(SIZE)
    row = 0.5 * np.sin(2 * np.pi * (columns / 8 + rng.uniform()))
    image = np.tile(row, (SIZE, 1)) + rng.normal(0, 0.05, (SIZE, SIZE))
    if blot:
        top, left = rng.integers(8, SIZE - 20, size=2)
        image[top : top + 12, left : left + 12] = -1.0
    return np.clip(image, -1, 1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def images() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "bank": [_stripes(rng) for _ in range(24)],
        "typical": [_stripes(rng) for _ in range(8)],
        "good": [_stripes(rng) for _ in range(6)],
        "defect": [_stripes(rng, blot=True) for _ in range(6)],
    }


@pytest.fixture(scope="module")
def denoiser(images) -> TrainedDenoiser:
    source = feature_source(SETTINGS, CPU)
    features, whitening = whitened_features([source(images["bank"])])
    model = new_denoiser(features.shape[1], TINY.shape, TINY.seed)
    trained, _ = train_denoiser(model, features, whitening, TINY.train_config(), progress=False)
    return trained


@pytest.mark.parametrize(
    ("name", "cost"),
    [
        ("inversion", Cost(backbone_passes=1, denoiser_passes=3)),
        ("feature_reconstruction", Cost(backbone_passes=1, denoiser_passes=2)),
        ("fused", Cost(backbone_passes=2, denoiser_passes=3)),
    ],
)
def test_a_planted_blot_scores_above_every_good_image(name, cost, images, denoiser) -> None:
    kind = map_kind(replace(SETTINGS, map=name), CPU, denoiser=denoiser)
    kind.fit(GoodImages(images["bank"], images["typical"]))
    scores = {
        split: [kind.finish(raw)[1] for raw in kind.raw_maps([MapInput(i) for i in images[split]])]
        for split in ("good", "defect")
    }
    assert min(scores["defect"]) > max(scores["good"])
    assert kind.cost(3) == cost


def test_a_map_that_reads_the_denoiser_says_how_to_make_it_when_it_is_missing() -> None:
    with pytest.raises(DdadError, match="denoiser@<category>"):
        map_kind(replace(SETTINGS, map="inversion"), CPU)
