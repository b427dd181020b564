"""Every bad params.yaml value stops the pipeline with one line naming the key and the fix."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from ddad.diffusion.models import check_preset
from ddad.errors import DdadError
from ddad.params import (
    ParamsError,
    detect_settings,
    input_size,
    parse_params,
    plan_from,
    score_settings,
    setting,
    train_config,
    validate,
)
from stages import check_params
from stages.params import load_params

REPO = Path(__file__).resolve().parents[1]
REAL = yaml.safe_load((REPO / "params.yaml").read_text())
DELETE = object()


def _set(params: dict, path: str, value) -> None:
    """Set one dotted key of ``params`` (``value`` DELETE removes it)."""
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def _with(path: str, value) -> dict:
    """The real params with one dotted key set (``value`` DELETE removes it)."""
    return _with_all(**{path.replace(".", "__"): value})


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
        ("train.lr", "1e-3", "train.lr = '1e-3' is not allowed; expected a number > 0"),
        ("train.lr", 0, "train.lr = 0 is not allowed; expected a number > 0"),
        ("score.sigma", float("nan"), "score.sigma = nan is not allowed; expected a number >= 0"),
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
            "data.image_size = [64] is not allowed; expected auto or a side in 8..4096 (square) "
            "or [height, width]",
        ),
        ("data.image_size", [64, 4], "data.image_size[1] = 4 is not allowed"),
        ("data.image_size", 5000, "expected auto or a side in 8..4096"),
        ("detect.false_alarm_rate", 0, "expected a number in 0..0.5 (not 0)"),
        ("detect.false_alarm_rate", 0.6, "expected a number in 0..0.5"),
        ("detect.folds", 1, "detect.folds = 1 is not allowed; expected 0 (the held-out images"),
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
        "expected one of ddpm, ddim, one_step; fix reconstruct.sampler in params.yaml, "
        "or `dvc exp run -S reconstruct.sampler=<value>`"
    ]
    assert not (tmp_path / "models").exists()


def test_stage_stderr_holds_nothing_but_the_error(tmp_path):
    result = _run_stage(tmp_path, "fetch_model", _with("train.steps", "ten"))
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "key, value, settable",
    [
        ("data.synthetic.train", 1, "data.synthetic.train"),
        ("data.image_size", 66, "data.image_size"),
        ("train.t_range", [0, 1000], "train.t_range"),  # -S sets the whole list
    ],
)
def test_a_stage_names_the_one_key_to_fix(tmp_path, key, value, settable):
    """The bad value stays in the file after the error, so the line says which key to fix
    there; going back with git would throw away the user's other settings too."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(key, value), sort_keys=False))
    with pytest.raises(DdadError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.endswith(f" in {path}, or `dvc exp run -S {settable}=<value>`")
    assert f"; fix {key}" in message
    assert "git checkout" not in message


@pytest.mark.parametrize("key, value", [("trian", {}), ("score.sigma", DELETE)])
def test_an_unknown_or_missing_key_says_what_to_do_and_no_more(tmp_path, key, value):
    path = tmp_path / "params.yaml"
    params = {**REAL, key: value} if key == "trian" else _with(key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(DdadError) as caught:
        load_params(path)
    assert str(caught.value).endswith(("did you mean 'train'?", "add it (see README, 'The knobs')"))


def test_check_params_writes_the_same_file_every_time(tmp_path, monkeypatch):
    """Every stage depends on it: a constant file re-runs nothing downstream."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "own").mkdir(parents=True)
    check_params.main(REAL, [])
    first = check_params.CHECKED_FILE.read_bytes()
    check_params.main(_with("score.sigma", 2.0), [])
    assert check_params.CHECKED_FILE.read_bytes() == first


def test_category_absent_from_the_source_stops_before_any_data(tmp_path):
    result = _run_stage(tmp_path, "fetch_data", _with("data.categories", ["nope"]), "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: params.yaml: data.categories = 'nope' is not allowed; expected a synthetic "
        "category (stripes, tiles, washer)"
    )
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


def _with_all(**dotted) -> dict:
    """The real params with several dotted keys set (``__`` stands for ``.``)."""
    params = copy.deepcopy(REAL)
    for path, value in dotted.items():
        _set(params, path.replace("__", "."), value)
    return params


# Every refusal a stage can reach from a params value, and the key check_params names for it.
# The comment says where a stage (or the library it calls) would refuse it, or break, after
# DVC had already deleted that stage's outputs.
REFUSALS = [
    # train: ddad.diffusion.models.check_preset (the same size_needs the check calls)
    ("data.image_size", _with_all(data__image_size=66)),
    ("data.image_size", _with_all(data__image_size=[130, 320])),
    ("data.image_size", _with_all(model__preset="small", data__image_size=68)),
    ("data.image_size", _with_all(model__preset="openai-256-uncond", data__image_size=64)),
    ("model.preset", _with_all(model__preset="huge")),
    # train: the pretrained weights do not load into a one-channel model
    (
        "data.channels",
        _with_all(model__preset="openai-256-uncond", data__image_size=256, data__channels="1"),
    ),
    # train: a crop the UNet cannot halve down and back up (a skip connection's size mismatch)
    ("train.crop", _with_all(train__crop=30)),
    ("train.crop", _with_all(model__preset="small", train__crop=20)),
    # train: a learning rate that learns nothing, or no number at all
    ("train.lr", _with_all(train__lr=0)),
    ("train.lr", _with_all(train__lr=-1)),
    ("train.lr", _with_all(train__lr=float("nan"))),
    ("train.t_range", _with_all(train__t_range=[300, 100])),
    ("train.t_range[1]", _with_all(train__t_range=[0, 1000])),
    # train: layout.split_train_val; plot: no held-out good images to set the threshold from
    ("train.val_images", _with_all(train__val_images=0)),
    # train: DistributedDataParallel with fewer samples than processes; the rendezvous
    ("train.batch_size", _with_all(dist__nproc_per_node=32)),
    ("dist.rdzv_endpoint", _with_all(dist__nnodes=2)),
    ("dist.nproc_per_node", _with_all(dist__nproc_per_node=0)),
    # fetch_data: synthetic.generate_dataset and mvtec.fetch_category know their categories
    ("data.categories", _with_all(data__categories=["nope"])),
    ("data.categories", _with_all(data__source="mvtec", data__categories=["stripes"])),
    ("data.root", _with_all(data__source="folder", data__root="")),
    # DVC: data.root is every fetch_data stage's dependency, whatever the source; one that holds
    # or lies in an output makes a cycle, or lets DVC delete the user's images
    ("data.root", _with_all(data__root="")),
    ("data.root", _with_all(data__source="folder", data__root="data/images")),
    ("data.root", _with_all(data__source="folder", data__root="./data/images/mine")),
    ("data.root", _with_all(data__source="folder", data__root="data")),
    ("data.root", _with_all(data__source="folder", data__root=".")),
    ("data.categories", _with_all(data__categories=["../escape"])),
    ("data.mvtec_sha256", _with_all(data__mvtec_sha256="abc")),
    # fetch_model: download's checksum pin, known bad only after the whole download
    ("model.sha256", _with_all(model__sha256="abc")),
    ("data.synthetic.seed", _with_all(data__synthetic__seed=-1)),
    # every stage reading images: imageio's resize methods
    ("data.resize", _with_all(data__resize="cubic")),
    ("data.mask_resize", _with_all(data__mask_resize="bilinear")),
    # reconstruct: the sampler's schedule and the 1000 noise levels
    ("reconstruct.steps", _with_all(reconstruct__timesteps=3, reconstruct__steps=5)),
    ("reconstruct.jitter", _with_all(reconstruct__timesteps=900, reconstruct__jitter=0.2)),
    ("reconstruct.timesteps", _with_all(reconstruct__timesteps=1000)),
    ("reconstruct.sampler", _with_all(reconstruct__sampler="dpm")),
    ("reconstruct.batch_size", _with_all(reconstruct__batch_size=0)),
    # score: scoring.gaussian_kernel, position_gaussian (two images), whitening (two vectors)
    ("score.kernel_size", _with_all(score__kernel_size=6)),
    ("score.sigma", _with_all(score__sigma=float("inf"))),
    ("score.bank_images", _with_all(score__feature_model="gaussian", score__bank_images=1)),
    ("score.bank_vectors", _with_all(score__bank_vectors=1)),
    ("score.coreset", _with_all(score__coreset=0)),
    ("score.coreset", _with_all(score__coreset=1.5)),
    ("score.map", _with_all(score__map="pixels")),
    ("score.image_score", _with_all(score__image_score="mean")),
    # score: ddad.maps.backbone (its names, and sides its strides and kernels can take)
    ("score.backbone", _with_all(score__backbone="resnet50")),
    ("score.backbone_size", _with_all(score__backbone_size=40)),
    ("score.backbone_size", _with_all(score__backbone_size=16)),
    ("score.backbone_size", _with_all(score__backbone_size=[64, 72])),
    ("score.backbone_size", _with_all(score__backbone_size="big")),
    ("score.backbone_strides[0]", _with_all(score__backbone_strides=[32])),
    ("score.backbone_strides", _with_all(score__backbone_strides=[])),
    ("score.backbone_strides", _with_all(score__backbone_strides=[8, 8])),
    ("score.backbone_pooling", _with_all(score__backbone_pooling=2)),
    ("score.backbone_pooling", _with_all(score__backbone_pooling=11)),
    ("score.feature_weight", _with_all(score__feature_weight=-1.0)),
    # evaluate: metrics.summary's names, evaluation's resolutions
    ("evaluate.metrics[0]", _with_all(evaluate__metrics=["auroc"])),
    ("evaluate.metrics", _with_all(evaluate__metrics=[])),
    ("evaluate.resolution", _with_all(evaluate__resolution="full")),
    # plot: a count of sheets
    ("plot.overlays_per_category", _with_all(plot__overlays_per_category=-1)),
    # every stage: engine.resolve_device's names
    ("device", _with_all(device="tpu")),
]


@pytest.mark.parametrize(
    "key, params", REFUSALS, ids=[f"{key}-{i}" for i, (key, _) in enumerate(REFUSALS)]
)
def test_check_params_refuses_what_a_stage_would(key, params):
    """No value a stage refuses gets past the first stage, so none deletes an output."""
    with pytest.raises(ParamsError) as caught:
        validate(params)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"params.yaml: {key} = ")


@pytest.mark.parametrize("size", [66, [130, 320]])
def test_the_check_and_train_share_the_size_rule(size):
    params = _with("data.image_size", size)
    with pytest.raises(ParamsError, match="expected multiples of 4 on each side for model.preset"):
        validate(params)
    with pytest.raises(DdadError, match="data.image_size: tiny needs multiples of 4 on each side"):
        check_preset("tiny", size)


def test_check_params_refuses_cuda_where_there_is_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DdadError, match="^device: cuda was asked for but no CUDA device"):
        check_params.main(_with("device", "cuda"), [])
    assert not check_params.CHECKED_FILE.exists()


def test_check_params_wants_the_folder_every_fetch_data_depends_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DdadError, match=r"^data.root: data/own is not a folder; .*mkdir -p"):
        check_params.main(REAL, [])
    assert not check_params.CHECKED_FILE.exists()


def test_the_builders_defaults_are_the_shipped_params() -> None:
    """Outside a project every settings object takes its dataclass's defaults, the one place
    they live; params.yaml ships the same values, so `ddad detect` and `dvc repro` agree."""
    shipped = load_params(REPO / "params.yaml")
    assert score_settings({}) == score_settings(shipped)
    assert plan_from({}) == plan_from(shipped)
    assert train_config({}) == train_config(shipped)
    assert detect_settings({}) == detect_settings(shipped)


def test_a_category_override_and_a_flag_pick_the_plans_noise_level() -> None:
    params = {"reconstruct": {"timesteps": 200, "timesteps_per_category": {"cable": 350}}}
    assert plan_from(params, "cable").timesteps == 350
    assert plan_from(params, "wood").timesteps == 200
    assert plan_from(params, "cable", {"timesteps": 90, "steps": None}).timesteps == 90
    with pytest.raises(DdadError, match="past 999"):
        plan_from({"reconstruct": {"timesteps": 950, "jitter": 0.1}})


def _photographs(root: Path, *sizes: tuple[int, int]) -> Path:
    """A category "part" whose training photographs have these (height, width), blank."""
    good = root / "part" / "train" / "good"
    good.mkdir(parents=True)
    for index, (height, width) in enumerate(sizes):
        Image.new("L", (width, height)).save(good / f"{index:03d}.png")
    return root


@pytest.mark.parametrize(
    "sizes, chosen",
    [
        ([(64, 64)], 64),  # the synthetic set's: the default run reads it as it always did
        ([(683, 1024), (1024, 683), (683, 1024)], [224, 336]),  # most: shorter side down to 224
        ([(100, 150)], [96, 144]),  # a small photograph keeps its size, sides multiples of 16
        ([(12, 40)], [32, 112]),  # a tiny one grows to the backbone's 32, shape kept
    ],
)
def test_auto_chooses_the_input_size_from_the_photographs(tmp_path, sizes, chosen) -> None:
    found = input_size(_with("data.image_size", "auto"), _photographs(tmp_path, *sizes), "part")
    assert found.size == chosen
    assert found.source.startswith("data.image_size auto: the training photographs'")


def test_a_size_set_or_the_presets_own_comes_before_the_photographs(tmp_path) -> None:
    root = _photographs(tmp_path, (683, 1024))
    assert input_size(_with("data.image_size", [96, 128]), root, "part").size == [96, 128]
    openai = _with_all(data__image_size="auto", model__preset="openai-256-uncond")
    assert input_size(openai, root, "part").size == 256
