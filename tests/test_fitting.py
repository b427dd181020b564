"""Batches that halve on out-of-memory: the retry arithmetic, on the CPU with a raising stand-in;
where ``auto`` starts, from the attention a real UNet needs at an image size."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from ddad.diffusion.fitting import (
    AUTO_SAMPLES,
    attention_bytes,
    available_memory,
    in_fitting_chunks,
    samples_for,
    samples_per_pass,
)
from ddad.diffusion.models import build_model
from ddad.errors import DdadError


def fits_at_most(limit: int, calls: list[int]):
    """Work that sums its chunk, or runs out of memory when handed more than ``limit`` items."""

    def work(chunk: Sequence[int]) -> int:
        calls.append(len(chunk))
        if len(chunk) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return sum(chunk)

    return work


def test_a_chunk_that_runs_out_of_memory_is_halved_and_later_chunks_keep_the_size() -> None:
    calls: list[int] = []
    freed: list[bool] = []
    results, size = in_fitting_chunks(
        fits_at_most(3, calls), list(range(10)), 8, lambda: freed.append(True)
    )
    assert calls == [8, 4, 2, 2, 2, 2, 2]
    assert results == [0 + 1, 2 + 3, 4 + 5, 6 + 7, 8 + 9] and sum(results) == sum(range(10))
    assert size == 2 and len(freed) == 2


def test_a_size_that_fits_is_kept_and_nothing_is_retried() -> None:
    calls: list[int] = []
    results, size = in_fitting_chunks(fits_at_most(100, calls), list(range(5)), 2)
    assert (calls, results, size) == ([2, 2, 1], [1, 5, 4], 2)


def test_one_item_that_does_not_fit_is_one_clear_error() -> None:
    with pytest.raises(
        DdadError, match="out of memory with one image per UNet pass; lower reconstruct.ensemble"
    ):
        in_fitting_chunks(fits_at_most(0, []), [1, 2], 4)


def test_a_chunk_the_cpu_allocator_refuses_is_halved() -> None:
    calls: list[int] = []

    def work(chunk: Sequence[int]) -> int:
        calls.append(len(chunk))
        if len(chunk) > 2:
            torch.empty(len(chunk) << 50, dtype=torch.uint8)  # petabytes: refused, not swapped
        return sum(chunk)

    results, size = in_fitting_chunks(work, list(range(6)), 8)
    assert calls == [6, 4, 2, 2, 2] and results == [1, 5, 9] and size == 2


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken(chunk: Sequence[int]) -> int:
        calls.append(len(chunk))
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        in_fitting_chunks(broken, [1, 2, 3], 2)
    assert calls == [2]


def test_auto_starts_from_the_devices_size_and_a_number_is_kept() -> None:
    assert samples_per_pass("auto", torch.device("cpu")) == AUTO_SAMPLES["cpu"]
    assert samples_per_pass("auto", torch.device("cuda")) == AUTO_SAMPLES["cuda"]
    assert samples_per_pass(12, torch.device("cuda")) == 12


def test_attention_bytes_are_the_largest_attentions_weights_and_softmax() -> None:
    tiny = build_model("tiny", 3, (256, 640))  # attends only in the middle: 64 channels at 1/4
    positions = (256 // 4) * (640 // 4)
    assert attention_bytes(tiny, 256, 640) == 2 * (64 // 32) * positions**2 * 4
    assert attention_bytes(tiny, 128, 320) * 16 == attention_bytes(tiny, 256, 640)
    assert attention_bytes(torch.nn.Linear(2, 2), 256, 640) == 0  # not a UNet: unknown


def test_auto_on_the_cpu_starts_where_half_the_available_memory_holds_the_attention() -> None:
    cpu = torch.device("cpu")
    assert samples_per_pass("auto", cpu, available_memory()) == 1
    assert samples_per_pass("auto", cpu, available_memory() // 20) in range(5, 12)  # about 10
    assert samples_per_pass("auto", cpu, 1024) == AUTO_SAMPLES["cpu"]
    assert (
        samples_per_pass("auto", torch.device("cuda"), available_memory()) == AUTO_SAMPLES["cuda"]
    )
    assert samples_per_pass(12, cpu, available_memory()) == 12


def test_samples_for_a_model_caps_auto_by_its_attention_at_that_size() -> None:
    tiny = build_model("tiny", 3, (256, 640))  # 1.7 GB a sample: far fewer than 64 fit here
    cpu = torch.device("cpu")
    assert 1 <= samples_for(tiny, "auto", cpu, 256, 640) < AUTO_SAMPLES["cpu"]
    assert samples_for(tiny, "auto", cpu, 32, 32) == AUTO_SAMPLES["cpu"]
    assert samples_for(tiny, 12, cpu, 256, 640) == 12
