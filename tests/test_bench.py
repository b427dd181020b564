"""The bench: NFE arithmetic, extrapolation, the seed's pass budget, the report and the CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion
from tiny_model import tiny_model_dir

from ddad.cli import _bench_subject, main
from ddad.detect import ScoreSettings
from ddad.diffusion import passes
from ddad.diffusion.models import build_diffusion, build_model
from ddad.diffusion.reconstruct import Plan
from ddad.maps.kinds import map_kind
from ddad.tools import bench
from ddad.tools.bench import (
    SEED_PLAN,
    Procedure,
    Workload,
    expected_nfe,
    extrapolate,
    format_report,
    matmul_peak,
    pass_budget,
    procedure_summary,
    time_default,
    time_seed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ZeroNoise(torch.nn.Module):
    """A UNet stand-in that predicts no noise: the sampler's bookkeeping without the cost."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return build_diffusion("tiny")


def test_seed_costs_about_4000_passes_per_image() -> None:
    # 16 members, t uniform in 225..274, t passes each with the off-by-one start at t-1
    assert expected_nfe(SEED_PLAN) == 16 * 249.5
    assert expected_nfe(Plan(250, sampler="ddpm", ensemble=16, off_by_one=True)) == 4000
    assert expected_nfe(Plan(250, sampler="ddpm", ensemble=16)) == 16 * 251


def test_expected_nfe_averages_over_the_start_steps_the_plan_draws() -> None:
    generators = [torch.Generator().manual_seed(i) for i in range(200)]
    drawn = torch.cat([SEED_PLAN.member_timesteps(g) for g in generators])
    assert set(drawn.tolist()) == set(range(225, 275))


def test_expected_nfe_of_short_samplers() -> None:
    assert expected_nfe(Plan(250, sampler="ddim", steps=5, ensemble=4)) == 20
    assert expected_nfe(Plan(3, sampler="ddim", steps=10, ensemble=2)) == 8
    assert expected_nfe(Plan(250, sampler="one_step", ensemble=4)) == 4


def test_pass_budget_and_extrapolation() -> None:
    assert pass_budget(31936, 0.02) == 639
    assert pass_budget(100, 1e-9) == 1
    assert pass_budget(3992.5, 1.0) == 3993
    assert extrapolate(2.0, 10, 4000) == 800.0


def test_procedure_summary_relates_time_passes_and_flops() -> None:
    row = procedure_summary(
        seconds_per_image=2.0, nfe_per_image=20, flops_per_image=2e10, peak_flops=1e11
    )
    assert row["images_per_second"] == 0.5
    assert row["achieved_flops"] == 1e10
    assert row["peak_fraction"] == 0.1


def test_time_seed_runs_exactly_the_budgeted_share(diffusion: GaussianDiffusion) -> None:
    images = np.zeros((2, 1, 8, 8), dtype=np.float32)
    timed = time_seed(Workload(ZeroNoise(), diffusion, images, torch.device("cpu")), share=0.02)
    total = 2 * expected_nfe(SEED_PLAN)
    assert timed["passes_timed"] == pass_budget(total, 0.02) == 160
    assert timed["extrapolated"] and timed["nfe_per_image"] == expected_nfe(SEED_PLAN)
    assert timed["share"] == pytest.approx(160 / total)


def test_time_seed_in_full_counts_every_member_pass(diffusion: GaussianDiffusion) -> None:
    images = np.zeros((1, 1, 8, 8), dtype=np.float32)
    timed = time_seed(Workload(ZeroNoise(), diffusion, images, torch.device("cpu")), share=1.0)
    assert not timed["extrapolated"] and timed["share"] == 1.0
    assert 16 * 225 <= timed["passes_timed"] <= 16 * 274
    assert timed["nfe_per_image"] == timed["passes_timed"]


def test_the_timing_reference_has_exactly_the_rows_asked_for() -> None:
    """The rows or maps asked for, cut to the coreset asked for: the bench times the search
    the pipeline would run."""
    model = build_model("tiny", 1, 16).eval()
    images = bench.random_images(2, 1, 16)
    rows = ScoreSettings(backbone="unet", bank_vectors=10, search_radius=-1)

    def fitted(settings: ScoreSettings):
        kind = map_kind(settings, torch.device("cpu"), model)
        kind.fit_for_timing(images)
        return kind

    small = fitted(rows)
    assert small.search.inner.bank.shape == (10, 96) and small.typical.shape == (16, 16)
    repeated = fitted(replace(rows, bank_vectors=300, reference_images=0))
    assert repeated.search.inner.bank.shape == (300, 96)  # 2 x 8 x 8 = 128, repeated
    assert repeated.typical is None
    maps = fitted(ScoreSettings(backbone="unet", bank_images=5)).search.inner
    assert maps.bank.shape == (5, 96, 8, 8) and maps.radius == ScoreSettings().search_radius
    cut = fitted(ScoreSettings(backbone="unet", bank_images=5, coreset=0.3))  # 2 per cell
    assert cut.search.inner.bank.shape == (2, 96, 8, 8)
    assert "a greedy coreset of 30% of them at each cell" in cut.describe()
    assert fitted(replace(rows, coreset=0.5)).search.inner.bank.shape == (5, 96)


def test_the_feature_map_costs_no_full_pass_whatever_the_plan(
    diffusion: GaussianDiffusion,
) -> None:
    model, images = build_model("tiny", 1, 16), bench.random_images(3, 1, 16)
    plan, cpu = Plan(timesteps=20, sampler="ddim", steps=4, ensemble=3), torch.device("cpu")
    work = Workload(model, diffusion, images, cpu)
    costs = {
        kind: time_default(work, Procedure(plan, 4, ScoreSettings(map=kind)))
        for kind in ("reconstruction", "ddad", "features")
    }
    assert costs["reconstruction"]["nfe_per_image"] == costs["ddad"]["nfe_per_image"] == 4 * 3
    assert costs["features"]["nfe_per_image"] == 0  # its features alone; no reconstruction
    assert costs["reconstruction"]["flops_per_feature_pass"] == 0
    assert costs["features"]["flops_per_feature_pass"] == costs["ddad"]["flops_per_feature_pass"]
    assert costs["features"]["flops_per_feature_pass"] > 0


def _report(extrapolated: bool, memory: dict | None) -> dict:
    row = procedure_summary(1.0, 4000, 4e12, 1e11)
    return {
        "seed": row
        | {"extrapolated": extrapolated, "share": 0.02, "passes_timed": 80, "passes_total": 4000.0},
        "default": procedure_summary(0.01, 20, 2e10, 1e11),
        "speedup": 100.0,
        "device": "cuda" if memory else "cpu",
        "peak_dtype": "float32",
        "peak_memory_bytes": memory,
        "seed_plan": "ddpm",
        "default_plan": "ddim",
        "default_map": "feature map",
        "batch_size": 64,
        "images": 1,
        "preset": "tiny",
        "channels": 1,
        "image_size": 16,
        "image_source": "random images",
    }


def test_report_says_when_the_seed_was_extrapolated() -> None:
    text = format_report(_report(extrapolated=True, memory=None))
    assert "EXTRAPOLATED: 80 of 4,000 UNet passes timed (share 0.02)" in text
    assert "default: ddim, batch 64 samples (ddad.diffusion.engine), feature map" in text
    assert "100.0x" in text and "peak memory" not in text
    assert "EXTRAPOLATED" not in format_report(_report(extrapolated=False, memory=None))


def test_report_shows_peak_memory_per_procedure_on_cuda() -> None:
    text = format_report(_report(True, {"seed": 3 * 2**20, "default": 40 * 2**20}))
    lines = text.splitlines()
    assert lines[-3].rstrip().endswith("peak memory")
    assert lines[-2].endswith("3 MiB") and lines[-1].endswith("40 MiB")


def test_matmul_peak_is_measured_in_float32_on_cpu() -> None:
    flops, dtype = matmul_peak(torch.device("cpu"), seconds=0.05)
    assert dtype == "float32" and flops > 1e6


@pytest.mark.usefixtures("quick_peak")
def test_bench_command_writes_the_json_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--preset", "tiny", "--channels", "1", "--image-size", "16", "--images", "2"]
    argv += ["--seed-share", "0.001", "--steps", "2", "--ensemble", "1", "--json", "out/b.json"]
    argv += ["--precisions", "bfloat16"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "b.json").read_text())
    seed_keys = {"nfe_per_image", "seconds_per_image", "images_per_second", "extrapolated", "share"}
    assert seed_keys <= set(report["seed"])
    default_keys = {"nfe_per_image", "seconds_per_image", "images_per_second", "flops_per_image"}
    default_keys |= {"achieved_flops", "peak_flops", "peak_fraction"}
    assert default_keys <= set(report["default"])
    assert report["seed"]["extrapolated"] is True and report["seed"]["nfe_per_image"] == 3992
    assert report["default"]["nfe_per_image"] == 0  # Lite0's feature pass; no UNet pass
    assert report["default"]["backbone_passes_per_image"] == 1
    assert report["default_map"].startswith("feature map")
    assert report["default_plan"] == "no reconstruction (the map reads the input alone)"
    assert report["batch_size"] is None
    assert 0 < report["flops_per_feature_pass"]
    assert report["default"]["flops_per_image"] == report["flops_per_feature_pass"]
    assert 0 < report["default"]["peak_fraction"]
    timed = [(row["precision"], row["channels_last"]) for row in report["passes"]]
    assert timed == [(p, c) for p in ("float32", "bfloat16") for c in (False, True)]
    assert 0 < report["passes"][2]["max_abs_difference"] < passes.AGREEMENT
    # measured with 1 and 2 processes under torch's launcher; 2 images: one batch each
    scaling = report["scaling"]
    assert scaling["processes"] == 2 and scaling["samples_per_batch"] == 1
    assert scaling["images_per_second_1"] > 0 and scaling["images_per_second_2"] > 0
    assert scaling["speedup"] == scaling["images_per_second_2"] / scaling["images_per_second_1"]
    assert report["speedup"] > 1
    assert report["peak_memory_bytes"] is None and report["device"] == "cpu"
    assert (report["preset"], report["image_size"]) == ("tiny", 16)
    out = capsys.readouterr().out
    assert "EXTRAPOLATED" in out
    assert "scaling: reconstruct of 2 images" in out and "2 processes" in out


@pytest.mark.parametrize("configured, timed", [("auto", 64), (24, 24)])
def test_bench_times_a_random_preset_at_data_image_size_or_64_for_auto(configured, timed) -> None:
    """Random images have no photographs for auto to follow."""
    args = argparse.Namespace(model=None, preset="tiny", channels="1", image_size=None, images=1)
    subject = _bench_subject(args, {"data": {"image_size": configured}})
    assert subject["about"]["image_size"] == timed and subject["images"].shape[-1] == timed


def test_bench_times_random_images_for_a_model_with_no_test_images_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_model_dir(tmp_path)
    (tmp_path / "data" / "images" / "toy" / "test" / "good").mkdir(parents=True)  # empty
    args = argparse.Namespace(model="toy", preset=None, channels=None, image_size=None, images=2)
    subject = _bench_subject(args, {})
    assert subject["about"]["image_source"].startswith("random images in [-1, 1] (no test images")
