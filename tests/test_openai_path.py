"""The seed's model for real, on the CPU: the OpenAI 256 path end to end under `dvc repro`, and
one fine-tuning step. The checkpoint has random weights but exactly OpenAI's names and shapes,
placed where a user places the real file, so only its values differ from the real run."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dvc_project import make_project, ran_stages, run_in, set_params
from PIL import Image

from ddad.diffusion.models import OPENAI_256_FILE, build_diffusion, build_model, save_checkpoint
from ddad.diffusion.train import TrainConfig, train_diffusion

# category -> (side in pixels, PIL mode, MVTec category type)
MVTEC_LIKE = {"grid": (1024, "L", "texture"), "bottle": (900, "RGB", "object")}
OPENAI_256 = {
    "model": {"preset": "openai-256-uncond"},
    "data": {"image_size": 256, "channels": "auto"},
    "train": {"steps": 0, "val_images": 1},
    "reconstruct": {"steps": 1, "ensemble": 1, "batch_size": 1},
    "score": {"bank_images": 2, "reference_images": 1},
    "plot": {"overlays_per_category": 2},
}
# The seed's procedure (README, "the seed's settings") at the fewest passes: t = 2 jittered and
# started one step late is one ancestral step.
SEED_SETTINGS = {
    "data": {"normalization": "minmax", "resize": "bicubic", "mask_resize": "bilinear_any"},
    "reconstruct": {
        "sampler": "ddpm",
        "timesteps": 2,
        "jitter": 0.1,
        "off_by_one": True,
        "ensemble": 1,
        "conditioning": 0.0,
    },
    "score": {"map": "reconstruction", "sigma": 1.4, "kernel_size": 7, "error": "squared"},
}


def _picture(side: int, mode: str, rng: np.random.Generator, spot: bool) -> Image.Image:
    """A smooth pattern with noise, and a dark square in the middle when ``spot``."""
    y, x = np.mgrid[0:side, 0:side] / side
    value = 0.5 + 0.3 * np.sin(12 * x + 3 * y) + 0.05 * rng.standard_normal((side, side))
    if spot:
        value[side // 3 : side // 2, side // 3 : side // 2] = 0.05
    gray = (np.clip(value, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(gray if mode == "L" else np.stack([gray, gray[::-1], gray.T], -1))


def make_mvtec_like(root: Path) -> None:
    """Two categories in MVTec's layout: 4 good training images, a good and a crack test image."""
    rng = np.random.default_rng(0)
    for category, (side, mode, _) in MVTEC_LIKE.items():
        for name, spot in [
            *((f"train/good/{i:03d}.png", False) for i in range(4)),
            ("test/good/000.png", False),
            ("test/crack/000.png", True),
        ]:
            path = root / category / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _picture(side, mode, rng, spot).save(path)
        mask = np.zeros((side, side), np.uint8)
        mask[side // 3 : side // 2, side // 3 : side // 2] = 255
        (root / category / "ground_truth" / "crack").mkdir(parents=True)
        Image.fromarray(mask).save(root / category / "ground_truth" / "crack" / "000_mask.png")


def _peak_child_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


@pytest.mark.slow
def test_the_openai_256_path_runs_end_to_end_for_every_map_and_the_seed_settings(tmp_path):
    data = tmp_path / "mvtec_like"
    make_mvtec_like(data)
    folder = {
        "data": {
            "source": "folder",
            "root": str(data),
            "categories": list(MVTEC_LIKE),
            "category_types": {c: kind for c, (_, _, kind) in MVTEC_LIKE.items()},
        }
    }
    project = make_project(tmp_path / "project", OPENAI_256, folder)
    save_checkpoint(build_model("openai-256-uncond", 3, 256), project / "models" / OPENAI_256_FILE)
    timings = {}
    for name, changes, passes in [
        ("features", {}, 0.0),  # Lite0's features: no UNet pass
        ("reconstruction", {"score": {"map": "reconstruction"}}, 1.0),  # one ddim step
        ("ddad", {"score": {"map": "ddad"}}, 1.0),  # the same step, compared in Lite0's eyes
        ("seed settings", SEED_SETTINGS, 1.0),  # one ancestral step
    ]:
        set_params(project, OPENAI_256, folder, changes)
        start = time.perf_counter()
        repro = run_in(project, "dvc", "repro")
        timings[name] = time.perf_counter() - start
        assert "reconstruct@grid" in ran_stages(repro) and "plot" in ran_stages(repro)
        results = pd.read_csv(project / "metrics" / "results.csv").set_index("category")
        assert results.loc["bottle", "category_type"] == "object"
        assert results.loc["grid", "category_type"] == "texture"
        for category in MVTEC_LIKE:
            with np.load(project / "runs" / category / "score" / "maps.npz") as maps:
                assert maps["maps"].shape == (2, 256, 256)
                assert np.isfinite(maps["maps"]).all()
            assert (project / "plots" / "overviews" / f"{category}.png").is_file()
            metrics = json.loads((project / "metrics" / "metrics.json").read_text())
            assert metrics["categories"][category]["nfe_per_image"] == passes
    peak = _peak_child_memory_gib()
    print(f"\nopenai-256 end to end: {timings}, peak child memory {peak:.1f} GiB")
    assert peak < 12


def test_the_learned_variance_is_trained_with_the_variational_bound_term():
    """guided-diffusion's hybrid loss for the OpenAI preset: noise MSE plus the vb term, as
    OpenAI trained it (their rescaled MSE scales vb by 1000 / 1000 steps)."""
    diffusion = build_diffusion("openai-256-uncond")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    output = torch.randn(2, 6, 8, 8, requires_grad=True)
    losses = diffusion.training_losses(lambda *_: output, x, torch.tensor([10, 500]))
    assert set(losses) >= {"mse", "vb", "loss"}
    assert torch.allclose(losses["loss"], losses["mse"] + losses["vb"])
    losses["vb"].sum().backward()
    assert output.grad[:, :3].abs().sum() == 0  # the vb term trains the variance alone
    assert output.grad[:, 3:].abs().sum() > 0


@pytest.mark.slow
def test_one_fine_tuning_step_of_the_256_model_runs_on_the_cpu():
    torch.manual_seed(0)
    model = build_model("openai-256-uncond", 3, 256, for_training=True)
    checkpointed = [m.use_checkpoint for m in model.modules() if hasattr(m, "use_checkpoint")]
    assert checkpointed and all(checkpointed)
    before = model.out[-1].weight.detach().clone()
    images = torch.rand(2, 3, 256, 256) * 2 - 1
    config = TrainConfig(steps=1, batch_size=1, lr=1e-4, t_range=(0, 999), log_every=1)
    start = time.perf_counter()
    ema, log = train_diffusion(
        model, build_diffusion("openai-256-uncond"), images, config, progress=False
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\none 256 fine-tuning step: {seconds:.0f} s, peak memory {peak:.1f} GiB")
    assert len(log.train) == 1 and np.isfinite(log.train[0][1])
    assert not torch.equal(ema.out[-1].weight, before)
