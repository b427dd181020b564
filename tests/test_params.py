"""Every bad params.yaml value stops the pipeline with one line naming the key and the fix."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddad.errors import DdadError
from ddad.params import parse_params, setting, validate
from stages import check_params
from stages.params import load_params

REPO = Path(__file__).resolve().parents[1]
REAL = yaml.safe_load((REPO / "params.yaml").read_text())
DELETE = object()


def _with(path: str, value) -> dict:
    """The real params with one dotted key set (``value`` DELETE removes it)."""
    params = copy.deepcopy(REAL)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


def _message(params: dict) -> str:
    with pytest.raises(DdadError) as caught:
        validate(params)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("params.yaml: ")
    return message


def test_real_params_are_valid():
    assert validate(copy.deepcopy(REAL)) == REAL


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("reconstruct.sampel", "ddim", "unknown key 'reconstruct.sampel'; did you mean 'sampler'?"),
        ("scroe", {}, "unknown key 'scroe'; did you mean 'score'?"),
        ("train.steps", "ten", "train.steps = 'ten' is not allowed; expected an integer >= 0"),
        ("train.steps", True, "train.steps = True is not allowed; expected an integer"),
        ("train.lr", "1e-3", "train.lr = '1e-3' is not allowed; expected a number >= 0"),
        ("reconstruct.timesteps", 0, "reconstruct.timesteps = 0 is not allowed"),
        ("reconstruct.timesteps", 1000, "expected an integer in 1..999"),
        (
            "reconstruct.ensemble",
            0,
            "reconstruct.ensemble = 0 is not allowed; expected an integer >= 1",
        ),
        ("score.sigma", -1, "score.sigma = -1 is not allowed; expected a number >= 0"),
        (
            "reconstruct.batch_size",
            "max",
            "reconstruct.batch_size = 'max' is not allowed; expected auto or an integer >= 1",
        ),
        ("reconstruct.sampler", "dpm", "expected one of ddpm, ddim, one_step"),
        (
            "model.preset",
            "huge",
            "model.preset = 'huge' is not allowed; expected one of tiny, small",
        ),
        ("device", "tpu", "device = 'tpu' is not allowed; expected one of auto, cpu, cuda"),
        (
            "data.categories",
            ["a", "a"],
            "data.categories = ['a', 'a'] is not allowed; expected distinct",
        ),
        ("data.categories", [], "expected a non-empty list"),
        ("train.t_range", [10], "train.t_range = [10] is not allowed; expected a list of 2"),
        ("train.t_range", [300, 100], "expected [low, high] with low <= high"),
        ("reconstruct.timesteps_per_category", {"washer": 0}, "timesteps_per_category.washer = 0"),
        (
            "score.kernel_size",
            6,
            "score.kernel_size = 6 is not allowed; expected 0 (auto) or an odd",
        ),
        (
            "data.image_size",
            [64],
            "data.image_size = [64] is not allowed; expected a side in 8..4096 (square) or "
            "[height, width]",
        ),
        ("data.image_size", [64, 4], "data.image_size[1] = 4 is not allowed"),
        ("data.image_size", 5000, "expected a side in 8..4096"),
        ("score.sigma", DELETE, "score.sigma is missing; add it"),
        ("data.synthetic", DELETE, "data.synthetic is missing"),
    ],
)
def test_one_bad_value_gives_one_exact_line(key, value, fragment):
    assert fragment in _message(_with(key, value))


def test_jitter_may_reach_but_not_pass_999():
    params = _with("reconstruct.jitter", 0.25)
    params["reconstruct"]["timesteps"] = 800  # draws t in [600, 999]
    validate(copy.deepcopy(params))
    params["reconstruct"]["timesteps"] = 801  # draws up to 1000
    assert "reconstruct.jitter = 0.25 is not allowed; expected a jitter that keeps " in (
        _message(params)
    )


def test_ddim_steps_may_not_exceed_t_plus_one():
    params = _with("reconstruct.timesteps", 3)
    params["reconstruct"].update(sampler="ddim", steps=4)
    validate(copy.deepcopy(params))
    params["reconstruct"]["steps"] = 5
    assert (
        "reconstruct.steps = 5 is not allowed; expected 1..4 (steps from reconstruct.timesteps"
        in (_message(params))
    )


def test_ddim_steps_checked_against_each_category_override():
    params = _with("reconstruct.timesteps_per_category", {"washer": 2})
    params["reconstruct"].update(sampler="ddim", steps=5)
    assert "steps from reconstruct.timesteps_per_category.washer = 2" in _message(params)


def test_ddpm_ignores_steps():
    params = _with("reconstruct.timesteps", 3)
    params["reconstruct"].update(sampler="ddpm", steps=50)
    assert validate(params)["reconstruct"]["steps"] == 50


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: synthetic\n  root: [unclosed\nmodel: {}\n")
    with pytest.raises(DdadError, match=r"params\.yaml: line \d+ is not valid YAML"):
        load_params(path)


def test_params_must_be_a_mapping_of_sections():
    assert parse_params("") == {}
    with pytest.raises(DdadError, match="expected a mapping of sections"):
        parse_params("- data\n- model\n")


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(DdadError, match="not found; run from the repository root"):
        load_params(tmp_path / "params.yaml")


def _run_stage(workdir: Path, stage: str, params: dict, *args: str) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_with_bad_params_exits_2_with_one_line(tmp_path):
    result = _run_stage(tmp_path, "fetch_model", _with("reconstruct.sampler", "dpm"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: params.yaml: reconstruct.sampler = 'dpm' is not allowed; "
        "expected one of ddpm, ddim, one_step; params.yaml still holds it: "
        "fix reconstruct.sampler there or run `git checkout params.yaml`"
    ]
    assert not (tmp_path / "models").exists()


def test_stage_stderr_holds_nothing_but_the_error(tmp_path):
    result = _run_stage(tmp_path, "fetch_model", _with("train.steps", "ten"))
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "key, value", [("trian", {}), ("score.sigma", DELETE), ("data.synthetic.train", 1)]
)
def test_a_stage_names_the_key_to_fix_in_params_yaml(tmp_path, key, value):
    """The bad value stays in the file after the error, so the line says what to fix there."""
    path = tmp_path / "params.yaml"
    params = {**REAL, key: value} if key == "trian" else _with(key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(DdadError) as caught:
        load_params(path)
    assert str(caught.value).endswith(f"fix {key} there or run `git checkout {path}`")


def test_check_params_writes_the_same_file_every_time(tmp_path, monkeypatch):
    """Every stage depends on it: a constant file re-runs nothing downstream."""
    monkeypatch.chdir(tmp_path)
    check_params.main(REAL, [])
    first = check_params.CHECKED_FILE.read_bytes()
    check_params.main(_with("score.sigma", 2.0), [])
    assert check_params.CHECKED_FILE.read_bytes() == first


def test_category_absent_from_the_data_is_named(tmp_path):
    result = _run_stage(tmp_path, "fetch_data", _with("data.categories", ["nope"]), "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: data.categories: 'nope' is not a synthetic category")
    assert "stripes" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("pin", ["abc", "g" * 64, "0" * 63])
def test_mvtec_pin_must_be_a_sha256(pin):
    with pytest.raises(DdadError, match=r"data.mvtec_sha256 = .* sha256 \(64 hex digits\)"):
        validate(_with("data.mvtec_sha256", pin))
    assert validate(_with("data.mvtec_sha256", "aB" * 32))


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_category_names_cannot_leave_their_folders(name):
    with pytest.raises(DdadError, match="a plain folder name"):
        validate(_with("data.categories", [name]))


def test_a_single_setting_is_checked_like_the_whole_tree() -> None:
    assert setting(REAL, "score.search_radius", None) == REAL["score"]["search_radius"]
    assert setting(REAL, "reconstruct.timesteps_per_category.nowhere", 7) == 7
    assert setting({}, "score.sigma", 1.5) == 1.5
    assert setting({"score": None}, "score.sigma", 1.5) == 1.5
    with pytest.raises(DdadError, match=r"^params.yaml: score.kernel_size = 6 is not allowed"):
        setting(_with("score.kernel_size", 6), "score.kernel_size", 7)
