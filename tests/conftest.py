"""Fixtures shared by several test modules."""

import pytest
import torch

from ddad.diffusion.models import build_model
from ddad.tools import bench


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread: on a few shared cores, spinning worker threads make small
    convolutions tens of times slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def quick_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measure the matmul peak for 0.05 s instead of 1 s."""
    peak = bench.matmul_peak
    monkeypatch.setattr(bench, "matmul_peak", lambda device, seconds=1.0: peak(device, 0.05))


@pytest.fixture(scope="module")
def tiny_unet() -> torch.nn.Module:
    """A seeded random tiny UNet for 1-channel 16 x 16 images, in eval mode."""
    torch.manual_seed(0)
    return build_model("tiny", 1, 16).eval()
