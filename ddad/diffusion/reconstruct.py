"""Noise images part of the way and denoise them back: the reconstruction engine.

Every ensemble member of every image in a batch goes through the UNet in one forward pass.
Each member carries its own start step, so the seed's jittered t and a fixed t share one code
path. All randomness comes from one generator per image, seeded from the image's key, so a
result does not depend on which other images shared its batch (what makes resumed runs exact).

Timesteps are guided-diffusion's indices 0..999; ``t`` means "noised with alpha_bar[t]", and
every sampler's first UNet pass is at exactly that ``t``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from guided_diffusion.gaussian_diffusion import GaussianDiffusion

SAMPLERS = ("ddpm", "ddim", "one_step")


@dataclass(frozen=True)
class Plan:
    """How to reconstruct: noise level, sampler and ensemble size (params.yaml ``reconstruct``,
    the same defaults).

    ``jitter`` > 0 draws each member's t uniformly from [floor((1-j)T), floor((1+j)T) - 1], as
    the seed does with j = 0.1. ``off_by_one`` starts the ancestral chain at t-1 after noising
    to t (the seed's fault, kept only to reproduce it). ``conditioning`` > 0 pulls each step's
    x0 estimate toward the input (DDAD-style), so good regions come back as they were.
    """

    timesteps: int = 250
    sampler: str = "ddim"
    steps: int = 4
    ensemble: int = 3
    jitter: float = 0.0
    off_by_one: bool = False
    conditioning: float = 0.0

    def member_timesteps(self, generator: torch.Generator) -> torch.Tensor:
        """Draw each ensemble member's noise level."""
        if self.jitter <= 0:
            return torch.full((self.ensemble,), self.timesteps, dtype=torch.long)
        low = int((1 - self.jitter) * self.timesteps)
        high = int((1 + self.jitter) * self.timesteps)
        return torch.randint(low, high, (self.ensemble,), generator=generator)

    def nfe(self, t: int) -> int:
        """UNet passes one member started at ``t`` costs."""
        if self.sampler == "ddpm":
            return t if self.off_by_one else t + 1
        if self.sampler == "ddim":
            return min(self.steps, t + 1)
        return 1


def picture_plan(plan: Plan) -> Plan:
    """One UNet pass, the x0 estimate at ``plan``'s t (one member): the picture the plots draw
    beside a feature map, for the few images they show."""
    return replace(plan, sampler="one_step", ensemble=1)


def picture_title(plan: Plan) -> str:
    """What a reconstruction of ``plan`` is, in the words a picture labels it with."""
    if plan.sampler == "one_step":
        return f"one-pass x0 estimate (t={plan.timesteps})"
    return "reconstruction"


def highest_timestep(timesteps: int, jitter: float) -> int:
    """The largest t ``Plan.member_timesteps`` can draw; it must stay below the 1000 steps of
    the noise schedule."""
    return int((1 + jitter) * timesteps) - 1 if jitter > 0 else timesteps


def image_seed(seed: int, key: str) -> int:
    """A stable 63-bit seed for one image, independent of batch composition and run order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _gaussian(
    shape: Sequence[int], generators: list[torch.Generator], members: int
) -> torch.Tensor:
    """Noise for a batch laid out as [image0 members..., image1 members...], one generator each."""
    return torch.cat([torch.randn((members, *shape), generator=g) for g in generators])


def _schedule(t_start: torch.Tensor, sampler: str, steps: int, off_by_one: bool) -> torch.Tensor:
    """Per-member timesteps to visit, shape [passes, members]; -1 marks a finished member.

    ddpm visits t, t-1, ..., 0 (from t-1 with ``off_by_one``); ddim visits ``steps`` evenly
    spaced steps from t down to 0 (fewer if t is small); one_step visits t alone.
    """
    if sampler == "one_step":
        return t_start[None]
    if sampler == "ddpm":
        first = t_start - 1 if off_by_one else t_start
        passes = int(first.max()) + 1
        offsets = torch.arange(passes)[:, None]
        seq = first[None] - offsets
        return torch.where(seq >= 0, seq, torch.full_like(seq, -1))
    count = torch.clamp(t_start + 1, max=steps)
    fractions = torch.arange(steps)[:, None] / (count[None] - 1).clamp(min=1)
    seq = torch.round(t_start[None] * (1 - fractions)).long()
    return torch.where(torch.arange(steps)[:, None] < count[None], seq, torch.full_like(seq, -1))


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values[t.clamp(min=0)].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def reconstruct(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    images: torch.Tensor,
    keys: Sequence[str],
    plan: Plan,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Reconstruct ``images`` ([N, C, H, W] in [-1, 1]) ``plan.ensemble`` times each.

    Returns (reconstructions [N, E, C, H, W] on the images' device, member timesteps [N, E],
    UNet passes spent on the whole batch counted per image-member evaluated).
    """
    n, members = images.shape[0], plan.ensemble
    device, dtype = images.device, images.dtype
    generators = [torch.Generator().manual_seed(image_seed(seed, k)) for k in keys]
    t_start = torch.cat([plan.member_timesteps(g) for g in generators])
    shape = images.shape[1:]
    x0 = images.repeat_interleave(members, dim=0)
    alphas = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float64, device=device)
    t_dev = t_start.to(device)
    noise = _gaussian(shape, generators, members).to(device, dtype)
    x = _gather(alphas, t_dev, x0).sqrt() * x0 + (1 - _gather(alphas, t_dev, x0)).sqrt() * noise
    schedule = _schedule(t_start, plan.sampler, plan.steps, plan.off_by_one).to(device)
    estimate = x0.clone()
    passes = 0
    for i, t in enumerate(schedule):
        active = t >= 0
        if not active.any():
            break
        # a slice when every member is still running: no gather copies in the common case
        idx = slice(None) if active.all() else active.nonzero().squeeze(1)
        t_act = t[idx]
        out = diffusion.p_mean_variance(model, x[idx], t_act, clip_denoised=True)
        passes += len(t_act)
        x0_hat = out["pred_xstart"]
        if plan.conditioning > 0:
            x0_hat = (x0_hat + plan.conditioning * (x0[idx] - x0_hat)).clamp(-1, 1)
        estimate[idx] = x0_hat
        if plan.sampler == "one_step":
            continue
        if plan.sampler == "ddpm":
            mean = (
                _posterior_mean(diffusion, x0_hat, x[idx], t_act)
                if plan.conditioning
                else out["mean"]
            )
            step_noise = _gaussian(shape, generators, members).to(device, dtype)[idx]
            nonzero = (t_act > 0).to(dtype).view(-1, *([1] * len(shape)))
            x[idx] = mean + nonzero * torch.exp(0.5 * out["log_variance"]) * step_noise
        else:
            t_next = schedule[i + 1][idx] if i + 1 < len(schedule) else torch.full_like(t_act, -1)
            x[idx] = _ddim_step(alphas, x[idx], x0_hat, t_act, t_next)
    return estimate.view(n, members, *shape), t_start.view(n, members), passes


def _posterior_mean(
    diffusion: GaussianDiffusion, x0_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    mean, _, _ = diffusion.q_posterior_mean_variance(x_start=x0_hat, x_t=x_t, t=t)
    return mean


def _ddim_step(
    alphas: torch.Tensor,
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from t to t_next; t_next -1 means "land on x0"."""
    a_t = _gather(alphas, t, x_t)
    eps = (x_t - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
    a_next = torch.where(
        (t_next >= 0).view_as(a_t), _gather(alphas, t_next, x_t), torch.ones_like(a_t)
    )
    return a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps
