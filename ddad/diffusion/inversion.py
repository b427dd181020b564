"""Deterministic DDIM (eta 0) both ways over feature grids: up to the noise end (inversion)
and down from part of the way (reconstruction).

Inversion (InvAD's way) walks a good feature map from t = 0 to t = 999 with the denoiser's own
noise estimates; where the denoiser knows the features, the end point looks like a draw of
N(0, I), and where it does not, it lands far out. Reconstruction (DDAD's and LafitE's way)
noises the features to t and walks back to t = 0, each step's estimate of the clean features
pulled toward the input by ``conditioning`` so good cells come back as they were.

Nothing here clips: whitened features are not confined to [-1, 1] as images are. Timesteps are
guided-diffusion's indices 0..999 and ``alphas`` its ``alphas_cumprod`` (float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch

LAST_STEP = 999


def inversion_timesteps(steps: int) -> list[int]:
    """``steps`` + 1 evenly spaced timesteps from 0 to 999 (3 steps: 0, 333, 666, 999)."""
    if steps < 1:
        raise ValueError(f"inversion needs at least one step, not {steps}")
    return [round(j * LAST_STEP / steps) for j in range(steps + 1)]


def descent_timesteps(t: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from ``t`` down to 0 (one step: ``t`` alone), the
    passes of a reconstruction."""
    if steps < 1:
        raise ValueError(f"a reconstruction needs at least one step, not {steps}")
    if steps == 1:
        return [t]
    return [round(t * (1 - j / (steps - 1))) for j in range(steps)]


def _alpha(alphas: np.ndarray, t: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(float(alphas[t]), dtype=like.dtype, device=like.device)


def _predicted(
    model: torch.nn.Module, x: torch.Tensor, t: int, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's noise estimate at ``t`` and the clean features it implies."""
    steps = torch.full((len(x),), t, dtype=torch.long, device=x.device)
    eps = model(x, steps)
    return eps, (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()


def unit_gaussian_shrink(alphas: np.ndarray, timesteps: list[int]) -> float:
    """How much DDIM inversion over ``timesteps`` shrinks N(0, I) data with a perfect denoiser.

    For such data every x_t is N(0, I) and the exact flow leaves it be, but one DDIM step from
    t to t' built on the best estimates (of the clean data and of the noise) multiplies x_t by
    cos(theta' - theta), where cos(theta)^2 = alpha_bar_t: three steps to 999 shrink it about
    to a half. ``invert`` divides by this, so whitened good features end near N(0, I).
    """
    angles = [math.acos(math.sqrt(float(alphas[t]))) for t in timesteps]
    return math.prod(math.cos(b - a) for a, b in zip(angles, angles[1:], strict=False))


@torch.no_grad()
def invert(
    model: torch.nn.Module, alphas: np.ndarray, features: torch.Tensor, steps: int
) -> torch.Tensor:
    """The noise end [N, D, h, w] that DDIM inversion in ``steps`` steps reaches from
    ``features`` (taken as the chain at t = 0), over the shrink the steps apply to unit
    Gaussian data (``unit_gaussian_shrink``); ``steps`` model passes."""
    x = features
    timesteps = inversion_timesteps(steps)
    for t, t_next in zip(timesteps, timesteps[1:], strict=False):
        eps, clean = _predicted(model, x, t, _alpha(alphas, t, x))
        a_next = _alpha(alphas, t_next, x)
        x = a_next.sqrt() * clean + (1 - a_next).sqrt() * eps
    return x / unit_gaussian_shrink(alphas, timesteps)


@torch.no_grad()
def reconstruct_features(
    model: torch.nn.Module,
    alphas: np.ndarray,
    features: torch.Tensor,
    t: int,
    steps: int,
    noise: torch.Tensor,
    conditioning: float = 0.0,
) -> torch.Tensor:
    """``features`` [N, D, h, w] noised to ``t`` with ``noise`` (broadcast to them) and
    denoised back in ``steps`` DDIM steps (``steps`` model passes); each clean estimate is
    moved ``conditioning`` of the way toward the input (0: not at all, 1: onto it)."""
    a_t = _alpha(alphas, t, features)
    x = a_t.sqrt() * features + (1 - a_t).sqrt() * noise
    timesteps = descent_timesteps(t, steps)
    clean = features
    for i, step in enumerate(timesteps):
        alpha = _alpha(alphas, step, x)
        _, clean = _predicted(model, x, step, alpha)
        clean = clean + conditioning * (features - clean)
        if i + 1 == len(timesteps):
            break
        eps = (x - alpha.sqrt() * clean) / (1 - alpha).sqrt()
        a_next = _alpha(alphas, timesteps[i + 1], x)
        x = a_next.sqrt() * clean + (1 - a_next).sqrt() * eps
    return clean
