"""The pass table: one row per batch, precision and layout, float32 as the reference."""

from __future__ import annotations

import pytest
import torch

from ddad.diffusion import passes
from ddad.diffusion.models import build_model, with_random_outputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rows_cover_every_setting_and_float32_is_its_own_reference() -> None:
    model = with_random_outputs(build_model("tiny", 1, 16)).eval()
    images = torch.rand(1, 1, 16, 16) * 2 - 1
    rows = passes.pass_table(model, images, (1, 2), ("float32", "bfloat16"), (False, True))
    assert [(r["batch"], r["precision"], r["channels_last"]) for r in rows] == [
        (b, p, c) for b in (1, 2) for p in ("float32", "bfloat16") for c in (False, True)
    ]
    assert rows[0]["max_abs_difference"] == 0
    assert rows[1]["max_abs_difference"] < 1e-4  # channels-last float32: same sums, reordered
    assert 0 < rows[2]["max_abs_difference"] < 0.5  # bfloat16 rounds
    assert all(r["passes_per_second"] == r["batch"] / r["seconds_per_call"] for r in rows)
    assert all(r["peak_memory_bytes"] is None for r in rows)
    assert next(model.parameters()).is_contiguous()


def test_the_fastest_row_within_the_tolerance_is_kept() -> None:
    rows = [
        {"passes_per_second": 1.0, "max_abs_difference": 0.0},
        {"passes_per_second": 3.0, "max_abs_difference": 0.2},
        {"passes_per_second": 2.0, "max_abs_difference": 0.01},
    ]
    assert passes.fastest_agreeing(rows, tolerance=0.05) is rows[2]
    assert passes.fastest_agreeing(rows, tolerance=0.5) is rows[1]


def test_cpus_time_no_float16_and_bfloat16_only_with_its_instructions() -> None:
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    expected = ("float32", "bfloat16") if native else ("float32",)
    assert passes.fast_precisions(torch.device("cpu")) == expected
    assert passes.fast_precisions(torch.device("cuda"))[0] == "float32"


def test_a_fresh_models_zero_outputs_become_seeded_noise() -> None:
    images = torch.rand(1, 1, 16, 16)
    t = torch.zeros(1, dtype=torch.long)
    assert build_model("tiny", 1, 16)(images, t).abs().max() == 0
    first = with_random_outputs(build_model("tiny", 1, 16))
    again = with_random_outputs(build_model("tiny", 1, 16))
    assert first(images, t).abs().max() > 0
    assert torch.equal(first.out[-1].weight, again.out[-1].weight)
