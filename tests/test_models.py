import io
import os
import pickle

import pytest
import torch
from http_server import FileServer

from ddad.data.download import download
from ddad.diffusion.models import (
    OPENAI_256_PARAMETERS,
    build_model,
    count_parameters,
    find_openai_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from ddad.errors import DdadError


def test_openai_preset_has_the_published_parameter_count():
    model = build_model("openai-256-uncond", 3, 256)
    assert count_parameters(model) == OPENAI_256_PARAMETERS == 552_814_086
    assert model.out_channels == 6  # learned sigma


def test_openai_preset_refuses_another_size():
    with pytest.raises(DdadError, match="needs image_size 256, got 64"):
        build_model("openai-256-uncond", 3, 64)


def test_a_preset_runs_on_a_non_square_size_it_divides():
    model = build_model("tiny", 1, [16, 40])
    out = model(torch.zeros(1, 1, 16, 40), torch.zeros(1))
    assert out.shape == (1, 1, 16, 40)
    with pytest.raises(DdadError, match=r"needs multiples of 4 on each side, got \[16, 42\]"):
        build_model("tiny", 1, [16, 42])


def test_small_preset_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", 1, 16)
    save_checkpoint(model, tmp_path / "model.pt")
    fresh = build_model("tiny", 1, 16)
    load_weights(fresh, read_checkpoint(tmp_path / "model.pt"), tmp_path / "model.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])


def test_missing_key_is_named(tmp_path):
    state = build_model("tiny", 1, 16).state_dict()
    del state["out.2.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(DdadError, match=r"missing keys out\.2\.weight"):
        load_weights(build_model("tiny", 1, 16), read_checkpoint(tmp_path / "broken.pt"), tmp_path)


def test_wrong_channel_count_names_the_shape(tmp_path):
    save_checkpoint(build_model("tiny", 3, 16), tmp_path / "rgb.pt")
    with pytest.raises(DdadError, match="has shape"):
        load_weights(build_model("tiny", 1, 16), read_checkpoint(tmp_path / "rgb.pt"), tmp_path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(DdadError, match="not a loadable weights-only checkpoint"):
        read_checkpoint(path)


def test_checkpoint_downloaded_from_a_server_loads(tmp_path):
    buffer = io.BytesIO()
    torch.save(build_model("tiny", 1, 16).state_dict(), buffer)
    with FileServer({"/ckpt.pt": buffer.getvalue()}) as server:
        dest = tmp_path / "models" / "downloads" / "ckpt.pt"
        download(server.url("/ckpt.pt"), dest, retries=0, progress=False)
    load_weights(build_model("tiny", 1, 16), read_checkpoint(dest), dest)


def test_a_checkpoint_already_in_models_is_found_under_either_name(tmp_path):
    assert find_openai_checkpoint(tmp_path) is None
    (tmp_path / "256x256x_diffusion_uncond.pt").write_bytes(b"x")
    assert find_openai_checkpoint(tmp_path).name == "256x256x_diffusion_uncond.pt"
    (tmp_path / "256x256_diffusion_uncond.pt").write_bytes(b"x")
    assert find_openai_checkpoint(tmp_path).name == "256x256_diffusion_uncond.pt"
