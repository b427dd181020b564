"""DDIM both ways over feature grids (ddad.diffusion.inversion) with a tiny feature denoiser
(ddad.diffusion.feature_denoiser) trained on unit Gaussian "features": the data whose inverted
noise should be N(0, I) exactly, and which an outlier leaves."""

from __future__ import annotations

import pytest
import torch

from ddad.diffusion.feature_denoiser import DenoiserShape, FeatureDenoiser, feature_diffusion
from ddad.diffusion.inversion import (
    descent_timesteps,
    inversion_timesteps,
    invert,
    reconstruct_features,
    unit_gaussian_shrink,
)
from ddad.diffusion.train import TrainConfig, train_diffusion

CHANNELS = 8
ALPHAS = feature_diffusion().alphas_cumprod


@pytest.fixture(scope="module")
def denoiser() -> torch.nn.Module:
    torch.manual_seed(0)
    features = torch.randn(64, CHANNELS, 8, 8)
    config = TrainConfig(steps=300, batch_size=16, lr=3e-3, t_range=(0, 999), crop=0, seed=0)
    model = FeatureDenoiser(CHANNELS, DenoiserShape(width=32, blocks=2))
    trained, _ = train_diffusion(model, feature_diffusion(), features, config, progress=False)
    return trained.eval()


def test_timesteps_run_from_zero_to_the_noise_end_and_from_t_down_to_zero() -> None:
    assert inversion_timesteps(3) == [0, 333, 666, 999]
    assert inversion_timesteps(1) == [0, 999]
    assert descent_timesteps(250, 3) == [250, 125, 0]
    assert descent_timesteps(250, 1) == [250]


def test_coarse_steps_shrink_unit_gaussian_data_less_the_more_steps_there_are() -> None:
    shrinks = [unit_gaussian_shrink(ALPHAS, inversion_timesteps(k)) for k in (1, 3, 5, 200)]
    assert shrinks == sorted(shrinks)
    assert 0.45 < shrinks[1] < 0.55
    assert shrinks[-1] > 0.97


class _Exact(torch.nn.Module):
    """The best noise estimate for unit Gaussian data: sqrt(1 - alpha_bar_t) x_t."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha = torch.as_tensor(ALPHAS)[t].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - alpha).sqrt() * x


def test_a_perfect_denoiser_inverts_unit_gaussian_data_to_a_unit_gaussian() -> None:
    good = torch.randn(16, CHANNELS, 8, 8, generator=torch.Generator().manual_seed(3))
    for steps in (1, 3, 5):
        z = invert(_Exact(), ALPHAS, good, steps)
        assert 0.95 < float(z.square().mean()) / float(good.square().mean()) < 1.05


def test_inverted_good_features_are_close_to_a_unit_gaussian(denoiser) -> None:
    torch.manual_seed(1)
    good = torch.randn(16, CHANNELS, 8, 8)
    for steps in (3, 5):
        z = invert(denoiser, ALPHAS, good, steps)
        assert 0.5 < float(z.square().mean()) < 3.0  # a learnt denoiser's errors add spread
        assert abs(float(z.mean())) < 0.15


def test_an_outlier_inverts_far_out_and_comes_back_far_from_itself(denoiser) -> None:
    torch.manual_seed(2)
    features = torch.randn(4, CHANNELS, 8, 8)
    features[:, :, 3, 4] = 6.0
    z = invert(denoiser, ALPHAS, features, 3).square().mean(dim=1)
    assert bool((z[:, 3, 4] > 3 * z.median()).all())
    noise = torch.randn(CHANNELS, 8, 8, generator=torch.Generator().manual_seed(0))
    back = reconstruct_features(denoiser, ALPHAS, features, 250, 3, noise)
    error = (features - back).square().mean(dim=1)
    assert bool((error[:, 3, 4] > 3 * error.median()).all())


def test_full_conditioning_gives_the_input_back(denoiser) -> None:
    features = torch.randn(2, CHANNELS, 8, 8)
    noise = torch.randn(CHANNELS, 8, 8)
    back = reconstruct_features(denoiser, ALPHAS, features, 250, 3, noise, conditioning=1.0)
    torch.testing.assert_close(back, features)
