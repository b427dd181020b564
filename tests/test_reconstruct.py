"""Samplers start at exactly the planned t, count their UNet passes, and are batch-independent."""

import pytest
import torch

from ddad.diffusion.models import build_diffusion, build_model
from ddad.diffusion.reconstruct import (
    Plan,
    _schedule,
    image_seed,
    picture_plan,
    picture_title,
    reconstruct,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 8


class Recorder(torch.nn.Module):
    """Wraps a model and remembers the timesteps of every call."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[list[int]] = []

    def forward(self, x, t, **kwargs):
        self.calls.append(t.tolist())
        return self.inner(x, t, **kwargs)


class TrueNoise(torch.nn.Module):
    """Predicts exactly the noise reconstruct drew for one image with jitter 0."""

    def __init__(self, key: str, seed: int, members: int, shape: tuple[int, ...]):
        super().__init__()
        generator = torch.Generator().manual_seed(image_seed(seed, key))
        self.noise = torch.randn((members, *shape), generator=generator)

    def forward(self, x, t, **kwargs):
        return self.noise.to(x)


@pytest.fixture(scope="module")
def diffusion():
    return build_diffusion("tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny", 1, SIZE).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand((3, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(1)) * 2 - 1


def _visits(t_start: list[int], sampler: str, steps: int = 5, off_by_one: bool = False):
    """Per member, the timesteps the schedule visits (the -1 padding dropped)."""
    schedule = _schedule(torch.tensor(t_start), sampler, steps, off_by_one)
    return [[int(t) for t in column if t >= 0] for column in schedule.T]


def test_ddpm_visits_t_down_to_0():
    assert _visits([5], "ddpm") == [[5, 4, 3, 2, 1, 0]]


def test_ddpm_off_by_one_starts_at_t_minus_1():
    assert _visits([5], "ddpm", off_by_one=True) == [[4, 3, 2, 1, 0]]


def test_ddpm_members_with_different_t_each_start_at_their_own():
    assert _visits([2, 4, 0], "ddpm") == [[2, 1, 0], [4, 3, 2, 1, 0], [0]]


@pytest.mark.parametrize("t, steps", [(250, 5), (250, 1), (999, 10), (3, 5), (4, 5), (0, 5)])
def test_ddim_visits_steps_from_t_to_0(t, steps):
    (visits,) = _visits([t], "ddim", steps)
    assert len(visits) == min(steps, t + 1)
    assert visits[0] == t
    assert visits[-1] == 0 or steps == 1
    assert all(a > b for a, b in zip(visits, visits[1:], strict=False))


def test_ddim_members_keep_their_own_t():
    assert _visits([250, 2], "ddim", 4) == [[250, 167, 83, 0], [2, 1, 0]]


def test_one_step_visits_t_only():
    assert _visits([250, 7], "one_step") == [[250], [7]]


@pytest.mark.parametrize(
    "plan, first",
    [
        (Plan(6, sampler="ddpm", ensemble=1), 6),
        (Plan(6, sampler="ddpm", off_by_one=True, ensemble=1), 5),
        (Plan(250, sampler="ddim", steps=3, ensemble=1), 250),
        (Plan(250, sampler="one_step", ensemble=1), 250),
    ],
)
def test_first_unet_pass_is_at_the_planned_t(model, diffusion, images, plan, first):
    recorder = Recorder(model)
    _, timesteps, passes = reconstruct(recorder, diffusion, images[:2], ["a", "b"], plan)
    assert recorder.calls[0] == [first, first]
    assert timesteps.tolist() == [[plan.timesteps], [plan.timesteps]]
    assert len(recorder.calls) == plan.nfe(plan.timesteps)
    assert passes == 2 * plan.nfe(plan.timesteps)


@pytest.mark.parametrize(
    "plan", [Plan(300, sampler="one_step", ensemble=1), Plan(300, "ddim", steps=4, ensemble=1)]
)
def test_noise_level_matches_the_first_pass(diffusion, images, plan):
    """With the true noise predicted, x0 comes back only if x_t was noised to the same t."""
    oracle = TrueNoise("a", seed=3, members=1, shape=tuple(images.shape[1:]))
    recon, _, _ = reconstruct(oracle, diffusion, images[:1], ["a"], plan, seed=3)
    torch.testing.assert_close(recon[0, 0], images[0], atol=1e-5, rtol=0)


def test_seed_jitter_draws_t_between_225_and_274():
    drawn = Plan(250, jitter=0.1, ensemble=4000).member_timesteps(torch.Generator().manual_seed(0))
    assert (int(drawn.min()), int(drawn.max())) == (225, 274)


@pytest.mark.parametrize(
    "plan",
    [
        Plan(6, sampler="ddpm", ensemble=3, jitter=0.5),
        Plan(6, sampler="ddpm", ensemble=2, jitter=0.5, off_by_one=True),
        Plan(40, sampler="ddim", steps=4, ensemble=3, jitter=0.5),
        Plan(40, sampler="one_step", ensemble=2, jitter=0.5),
    ],
)
def test_passes_match_plan_nfe_per_member(model, diffusion, images, plan):
    recorder = Recorder(model)
    _, timesteps, passes = reconstruct(recorder, diffusion, images, ["a", "b", "c"], plan)
    assert len(set(timesteps.flatten().tolist())) > 1, "jitter should give members different t"
    assert passes == sum(plan.nfe(int(t)) for t in timesteps.flatten())
    assert passes == sum(len(call) for call in recorder.calls)
    shift = 1 if plan.off_by_one else 0
    assert recorder.calls[0] == [int(t) - shift for t in timesteps.flatten() if t >= shift]


@pytest.mark.parametrize(
    "plan",
    [
        Plan(6, sampler="ddpm", ensemble=2, jitter=0.5),
        Plan(40, sampler="ddim", steps=4, ensemble=2, jitter=0.5, conditioning=0.3),
    ],
)
def test_result_does_not_depend_on_batch_company(model, diffusion, images, plan):
    together, t_together, _ = reconstruct(model, diffusion, images, ["a", "b", "c"], plan, seed=5)
    alone, t_alone, _ = reconstruct(model, diffusion, images[1:2], ["b"], plan, seed=5)
    swapped, _, _ = reconstruct(model, diffusion, images[[2, 1]], ["c", "b"], plan, seed=5)
    assert torch.equal(t_together[1], t_alone[0])
    assert torch.equal(together[1], alone[0])
    assert torch.equal(together[1], swapped[1])
    other_seed, _, _ = reconstruct(model, diffusion, images[1:2], ["b"], plan, seed=6)
    assert not torch.equal(other_seed[0], alone[0])


def test_the_picture_beside_a_feature_map_is_one_pass_at_the_plans_t():
    plan = Plan(250, sampler="ddim", steps=4, ensemble=3, jitter=0.1, conditioning=0.2)
    picture = picture_plan(plan)
    assert picture.sampler == "one_step" and picture.ensemble == 1
    assert (picture.timesteps, picture.jitter, picture.conditioning) == (250, 0.1, 0.2)
    assert picture.nfe(250) == 1
    assert picture_title(picture) == "one-pass x0 estimate (t=250)"
    assert picture_title(plan) == "reconstruction"
