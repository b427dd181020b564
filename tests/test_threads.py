"""Results that do not depend on torch's thread count (ddad.diffusion.threads): a rank computing
on its share of the cores maps and reconstructs as one process on all of them."""

from collections.abc import Callable

import numpy as np
import pytest
import torch

from ddad.diffusion.engine import prepare_model
from ddad.diffusion.threads import LinearOnOneThread, one_thread
from ddad.maps.good_images import GoodImages
from ddad.maps.kinds import MapInput, map_kind
from ddad.maps.scoring import ScoreSettings
from ddad.maps.search import nearby_search, whitened


def _on(threads: int, work: Callable[[], object]) -> object:
    """``work()`` computed on ``threads`` torch threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return work()
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("feature_model", ["nearest", "gaussian"])
def test_a_features_map_is_the_same_bytes_on_one_two_and_four_threads(feature_model):
    """12 good images (a batch under 16 for the backbone's 1x1 convolutions), 32 px enlarged to
    128 for it (a three-channel resize), whitened or fitted per position (LAPACK, products over
    3,072 positions), 10 images mapped."""
    settings = ScoreSettings(backbone_size=128, reference_images=0, feature_model=feature_model)
    rng = np.random.default_rng(0)
    good = list(rng.uniform(-1, 1, (12, 1, 32, 32)).astype(np.float32))
    mapped = [MapInput(x) for x in rng.uniform(-1, 1, (10, 1, 32, 32)).astype(np.float32)]

    def maps() -> list[np.ndarray]:
        kind = map_kind(settings, torch.device("cpu"))
        kind.fit(GoodImages(good, []))
        return kind.raw_maps(mapped)

    one, *others = (_on(threads, maps) for threads in (1, 2, 4))
    for other in others:
        assert all(np.array_equal(a, b) for a, b in zip(one, other, strict=True))


def test_the_whitening_is_the_same_bytes_on_one_two_and_four_threads():
    """A bank of 12 maps whose 152 channels mostly move together: an ill-conditioned covariance
    (summed over 3,072 positions), whose inverse carries LAPACK's rounding into float32."""
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(12, 8, 16, 16, generator=generator)
    mixing = torch.randn(152, 8, generator=generator)
    noise = torch.randn(12, 152, 16, 16, generator=generator)
    bank = torch.einsum("cd,mdhw->mchw", mixing, shared) + 1e-3 * noise
    one, *others = (_on(n, lambda: whitened(nearby_search([bank], 2)).whitening) for n in (1, 2, 4))
    for other in others:
        assert torch.equal(one.mean, other.mean) and torch.equal(one.matrix, other.matrix)


def test_a_prepared_unet_is_the_same_bytes_on_one_thread_as_on_two(tiny_unet):
    """10 samples: under 16 for the 1x1 convolutions, and a product of 10 rows for the time
    embedding's linear layers. The arithmetic is the one of the UNet as built."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 1, 16, 16, generator=generator)
    t = torch.arange(10) * 50
    built = _on(2, lambda: tiny_unet(x, t))
    prepared = prepare_model(tiny_unet, torch.device("cpu"))
    assert any(isinstance(m, LinearOnOneThread) for m in prepared.modules())
    with torch.no_grad():
        one, two = (_on(threads, lambda: prepared(x, t)) for threads in (1, 2))
    assert torch.equal(one, two)
    torch.testing.assert_close(one, built.detach())


def test_one_thread_comes_back_to_the_count_before():
    saved = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == saved
