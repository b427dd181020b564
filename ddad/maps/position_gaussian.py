"""A Gaussian of the good features at each feature position, for aligned parts.

When every photograph shows the part in the same place, a position's good features form one
cloud, and a patch is scored by its Mahalanobis distance to that position's cloud
(``score.feature_model: gaussian``), the idea of PaDiM (Defard et al., 2020). It replaces the
nearest-patch search: one [D, D] product per position instead of a search over every bank
patch nearby, and a spread learnt per position, which the search cannot. It needs alignment
(unaligned textures have no per-position cloud) and holds a [D, D] matrix per position (about
1.5 GB for the tiny preset's 96 channels at 128 x 320 positions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ddad.diffusion.threads import one_thread

SHRINK = 0.01  # covariance shrinkage toward its mean variance, per position


class PositionGaussian(NamedTuple):
    """Per-position ``mean`` [P, D] and ``precision_root`` [P, D, D] (a Cholesky factor of the
    inverse covariance) of features on an h x w grid (``grid``, P = h * w)."""

    mean: torch.Tensor
    precision_root: torch.Tensor
    grid: tuple[int, int]

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, *size] Mahalanobis distances of [N, D, h, w] ``features`` to their positions'
        Gaussians, resized bilinearly to ``size``."""
        n, d, h, w = features.shape
        if (h, w) != self.grid:
            raise ValueError(
                f"features on a {h}x{w} grid; the Gaussians were fitted on {self.grid}"
            )
        # laid out row by row: a product of the permuted layout rounds by the thread count
        # (ddad.diffusion.threads)
        centred = (
            features.permute(2, 3, 0, 1).reshape(h * w, n, d) - self.mean.to(features)[:, None]
        ).contiguous()
        squared = torch.bmm(centred, self.precision_root.to(features)).square().sum(dim=2)
        grid = squared.sqrt().T.reshape(n, 1, h, w)
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[:, 0]


def fit_position_gaussian(batches: Iterable[torch.Tensor]) -> PositionGaussian:
    """The per-position Gaussians of [N, D, h, w] feature ``batches`` of good images.

    Sums are gathered one batch at a time, so the good images' features need not all be held,
    around the first batch's mean so that float32 products do not cancel away the spread.
    Each covariance is shrunk by ``SHRINK`` of its mean variance: with fewer good images than
    channels a plain covariance is singular, and a direction no good image varies in must not
    make every distance along it infinite.
    """
    count, total, products = 0, None, None
    for batch in batches:
        n, d, h, w = batch.shape
        rows = batch.permute(2, 3, 0, 1).reshape(h * w, n, d).float()
        if total is None:
            origin = rows.mean(dim=1, keepdim=True)
            total = torch.zeros(h * w, d, dtype=torch.float64, device=batch.device)
            products = torch.zeros(h * w, d, d, dtype=torch.float32, device=batch.device)
            grid = (h, w)
        rows = rows - origin
        total += rows.sum(dim=1).double()
        products += torch.bmm(rows.transpose(1, 2), rows)
        count += n
    if total is None or count < 2:
        raise ValueError("fit_position_gaussian needs the features of at least two good images")
    shift = (total / count).float()
    covariance = (products - count * shift[:, :, None] * shift[:, None, :]) / (count - 1)
    del products
    mean = shift + origin[:, 0]
    spread = covariance.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
    covariance += SHRINK * spread[:, None, None] * torch.eye(d, device=mean.device)
    with one_thread():  # MKL's LAPACK rounds by the thread count (ddad.diffusion.threads)
        precision_root = torch.linalg.cholesky(torch.linalg.inv(covariance))
    return PositionGaussian(mean, precision_root, grid)
