"""The map kinds' registry: every kind is found by its name and says what it costs, and a kind
registered from outside runs through the score stage and ``Detector`` untouched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny_model import SIZE, tiny_model_dir

from ddad.detect import Detector
from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.maps.good_images import BatchMap, GoodImages, in_this_process
from ddad.maps.kinds import KINDS, MapInput, MapKind, kind_class, map_kind
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import Cost
from stages import reconstruct, score

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("name", "passes"), [("features", 1), ("ddad", 1 + 3), ("reconstruction", 0)]
)
def test_each_kind_costs_its_sources_passes(name: str, passes: int, tiny_unet) -> None:
    lite = map_kind(ScoreSettings(map=name), CPU)
    assert lite.cost(ensemble=3) == Cost(backbone_passes=passes)
    own = map_kind(ScoreSettings(map=name, backbone="unet"), CPU, tiny_unet)
    assert own.cost(ensemble=3) == Cost(unet_passes=passes)


def test_only_the_kinds_that_compare_get_a_reconstruction_plan() -> None:
    plan = Plan()
    assert kind_class("features").reconstruction_plan(plan) is None
    assert kind_class("reconstruction").reconstruction_plan(plan) == plan
    assert kind_class("ddad").reconstruction_plan(plan) == plan


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(DdadError, match="score.map 'nope': expected one of .*features"):
        kind_class("nope")


class Brightness(MapKind):
    """A toy kind: how far each pixel is from the good bank's mean brightness."""

    name = "brightness"
    learns_from_good_images = True

    def fit(self, good: GoodImages, over_batches: BatchMap = in_this_process) -> None:
        self.mean = float(np.mean(np.stack(good.bank)))

    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        return [np.abs(item.image[0] - self.mean).astype(np.float64) for item in inputs]

    def cost(self, ensemble: int) -> Cost:
        return Cost()

    def describe(self) -> str:
        return "brightness"


@pytest.fixture
def brightness(monkeypatch: pytest.MonkeyPatch) -> ScoreSettings:
    monkeypatch.setitem(KINDS, Brightness.name, Brightness)
    return ScoreSettings(map=Brightness.name, sigma=0, reference_images=0, image_score="max")


def _gray(path: Path, value: int, spot: bool = False) -> None:
    pixels = np.full((SIZE, SIZE), value, dtype=np.uint8)
    if spot:
        pixels[4:8, 4:8] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def _project(root: Path) -> dict:
    """A category ``toy`` as fetch_data and train leave it: gray images, a spotted defect with
    its mask, a tiny model and its meta.json; returns params for it."""
    images = root / "data" / "images" / "toy"
    for i in range(4):
        _gray(images / "train" / "good" / f"{i}.png", 128)
    _gray(images / "test" / "good" / "0.png", 128)
    _gray(images / "test" / "spot" / "0.png", 128, spot=True)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[4:8, 4:8] = 255
    (images / "ground_truth" / "spot").mkdir(parents=True)
    Image.fromarray(mask, mode="L").save(images / "ground_truth" / "spot" / "0_mask.png")
    tiny_model_dir(root, ["toy/train/good/3.png"])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["image_size"] = SIZE
    params["device"] = "cpu"
    return params


def test_a_registered_kind_runs_through_the_score_stage(
    brightness: ScoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _project(tmp_path)
    params["score"]["map"] = brightness.map
    params["score"] |= {"sigma": 0, "reference_images": 0, "image_score": "max"}
    monkeypatch.chdir(tmp_path)
    reconstruct.main(params, ["toy"])
    found = score.category_maps(params, "toy")
    scores = {row["key"]: row["score"] for row in found["rows"]}
    assert scores["test/spot/0"] > 0.9 and scores["test/good/0"] < 1e-6
    assert found["cost"] == {
        "nfe_per_image": 0.0,
        "backbone_passes_per_image": 0.0,
        "denoiser_passes_per_image": 0.0,
    }


def test_the_score_stage_scores_each_training_image_against_the_others_alone(
    brightness: ScoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three training images (the fourth held out) of brightness 100, 130 and 190, in three
    folds: each one's good_fold score is its distance from the other two's mean, never from a
    bank that holds it; the test images are scored against all three."""
    params = _project(tmp_path)
    params["score"] |= {"map": brightness.map, "sigma": 0, "reference_images": 0}
    params["score"]["image_score"] = "max"
    for name, value in (("0", 100), ("1", 130), ("2", 190)):
        _gray(tmp_path / "data" / "images" / "toy" / "train" / "good" / f"{name}.png", value)
    monkeypatch.chdir(tmp_path)
    reconstruct.main(params, ["toy"])
    rows = score.category_maps(params, "toy")["rows"]
    folds = {row["key"]: row["score"] for row in rows if row["split"] == "good_fold"}
    level = {"0": 100, "1": 130, "2": 190}

    def far(value: float, others: list[float]) -> float:
        return abs(value - np.mean(others)) * 2 / 255

    expected = {
        f"train/{k}": far(v, [w for j, w in level.items() if j != k]) for k, v in level.items()
    }
    assert folds == pytest.approx(expected, rel=1e-5)
    test = {row["key"]: row["score"] for row in rows if row["split"] == "test"}
    assert test["test/good/0"] == pytest.approx(far(128, list(level.values())), rel=1e-5)
    params["detect"]["folds"] = 0
    rows = score.category_maps(params, "toy")["rows"]
    assert {row["split"] for row in rows} == {"test", "validation"}


def test_a_registered_kind_runs_through_the_detector(
    brightness: ScoreSettings, tmp_path: Path
) -> None:
    _project(tmp_path)
    detector = Detector.load(
        tmp_path / "models" / "trained" / "toy",
        threshold=0.5,
        score=brightness,
        device="cpu",
        data_root=tmp_path / "data" / "images",
    )
    test = tmp_path / "data" / "images" / "toy" / "test"
    good, spot = detector.score([test / "good" / "0.png", test / "spot" / "0.png"])
    assert (good.verdict, spot.verdict) == ("OK", "DEFECT")
    assert spot.reconstruction is None  # the kind reads the input alone


def test_stored_inputs_outlive_a_retraining_that_keeps_channels_and_held_out_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind that reads the input alone stores inputs that depend on meta.json's channels and
    held-out images only: new training figures keep the store; other held-out images do not."""
    params = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    summary = Path("runs/toy/recon/summary.json")
    meta_path = Path("models/trained/toy/meta.json")

    def digest_after(change: dict) -> str:
        meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | change))
        reconstruct.main(params, ["toy"])
        return json.loads(summary.read_text())["digest"]

    first = digest_after({})
    assert digest_after({"trained_steps": 250, "validation_loss": 0.01}) == first
    assert digest_after({"validation_images": ["toy/train/good/2.png"]}) != first
