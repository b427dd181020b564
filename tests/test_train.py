"""Validation crops: the size training sees, the same every time, whole images when uncropped.
Resuming: a saved state goes on to the very weights and loss curve of an uninterrupted run, a
signal stops training between two steps with its state saved, a saved state is tied to the
training that made it, and the stage says where the next run goes on from."""

import io
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ddad.diffusion.models import build_diffusion, build_model
from ddad.diffusion.train import (
    Resume,
    TrainConfig,
    train_diffusion,
    training_fingerprint,
    validation_crops,
)
from stages.resume import _resumable, _saver
from stages.train import _interrupted


def test_crops_are_fixed_training_sized_pieces_of_each_image() -> None:
    images = torch.arange(2 * 3 * 40 * 90, dtype=torch.float32).reshape(2, 3, 40, 90)
    crops = validation_crops(images, crop=16, seed=5, per_image=3)
    assert crops.shape == (6, 3, 16, 16)
    assert torch.equal(crops, validation_crops(images, crop=16, seed=5, per_image=3))
    for index, crop in enumerate(crops):
        source = images[index % 2]
        top = int((crop[0, 0, 0] - source[0, 0, 0]) // 90)
        left = int((crop[0, 0, 0] - source[0, 0, 0]) % 90)
        assert torch.equal(crop, source[:, top : top + 16, left : left + 16])


def test_no_crop_or_a_crop_as_large_as_a_side_keeps_the_whole_images() -> None:
    images = torch.zeros(2, 1, 32, 64)
    assert validation_crops(images, crop=0) is images
    assert validation_crops(images, crop=32) is images


CONFIG = TrainConfig(steps=6, batch_size=2, crop=8, flips=("hflip",), log_every=3)


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _train(resume: Resume | None = None, on_log=None):
    """The tiny model trained on fixed images from the same seeded start."""
    torch.manual_seed(0)
    model = build_model("tiny", 1, 16, for_training=True)
    return train_diffusion(
        model,
        build_diffusion("tiny"),
        _images(6, 1),
        CONFIG,
        _images(2, 2),
        progress=False,
        on_log=on_log,
        resume=resume,
    )


def _written(state: dict) -> dict:
    """``state`` after a round trip through a file, as the stage writes and reads it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _same(a: tuple, b: tuple) -> None:
    (ema_a, log_a), (ema_b, log_b) = a, b
    assert log_a == log_b and [step for step, _ in log_a.train] == [3, 6] and log_a.validation
    state_a, state_b = ema_a.state_dict(), ema_b.state_dict()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)


def test_sigint_stops_after_step_3_with_its_state_and_the_rest_ends_as_six_steps(
    one_torch_thread,
) -> None:
    saved: list[dict] = []

    def interrupt(log) -> None:  # during step 3, the first logged one
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # another test's launcher may have set its own
    with pytest.raises(KeyboardInterrupt):
        _train(Resume(save=lambda state: saved.append(_written(state))), on_log=interrupt)
    assert [state["step"] for state in saved] == [3]
    assert signal.getsignal(signal.SIGINT) is before  # training put the handler back
    _same(_train(), _train(Resume(state=saved[0])))


def test_saving_changes_nothing_and_every_saved_state_resumes_alike(one_torch_thread) -> None:
    saved: list[dict] = []
    whole = _train(Resume(save=lambda state: saved.append(_written(state)), every_s=0))
    assert saved and all(1 <= state["step"] < 6 for state in saved)  # none after the last
    _same(whole, _train())
    for state in saved:
        _same(whole, _train(Resume(state=state)))


def test_the_fingerprint_changes_with_what_decides_the_training() -> None:
    torch.manual_seed(0)
    model = build_model("tiny", 1, 16)
    images, cpu = _images(6, 1), torch.device("cpu")
    base = training_fingerprint(model, images, None, CONFIG, cpu, 1)
    assert base == training_fingerprint(model, images.clone(), None, CONFIG, cpu, 1)
    others = [
        training_fingerprint(model, images, None, replace(CONFIG, steps=7), cpu, 1),
        training_fingerprint(model, _images(6, 9), None, CONFIG, cpu, 1),
        training_fingerprint(model, images, _images(2, 2), CONFIG, cpu, 1),
        training_fingerprint(model, images, None, CONFIG, cpu, 2),
        training_fingerprint(model, images, None, CONFIG, torch.device("cuda"), 1),
        training_fingerprint(build_model("tiny", 1, 16), images, None, CONFIG, cpu, 1),
    ]
    assert len({base, *others}) == 7


def test_another_trainings_or_a_broken_state_is_said_removed_and_not_resumed(
    tmp_path, capsys
) -> None:
    path = tmp_path / "state.pt"
    _saver(path, "abc")({"step": 3})
    assert _resumable(path, "abc", "train@stripes") == {"step": 3}
    assert _resumable(path, "other", "train@stripes") is None
    assert not path.exists()
    path.write_bytes(b"PK\x03\x04 half")
    assert _resumable(path, "abc", "train@stripes") is None
    assert not path.exists()
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[0] == f"train@stripes: starting at step 0, not from {path}: made by another training"
    )
    assert lines[1].startswith(f"train@stripes: starting at step 0, not from {path}: unreadable (")
    assert len(lines) == 2


def test_the_interrupt_line_names_the_step_the_next_run_resumes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    back = "the last committed model comes back with `dvc checkout models/trained/stripes`"
    assert _interrupted(["stripes"]) == (
        "train@stripes: no training state was saved yet: the next `dvc repro` trains from "
        f"step 0; {back}"
    )
    _saver(Path("models/checkpoints/stripes/state.pt"), "abc")({"step": 7})
    assert _interrupted(["stripes"]) == (
        "train@stripes: the next `dvc repro` resumes from step 7, saved in "
        f"models/checkpoints/stripes/state.pt; {back}"
    )
