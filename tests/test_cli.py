"""The ddad command: exit codes, one-line errors, detect's output and files, baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image
from tiny_model import tiny_model_dir, write_gray

from ddad import __version__
from ddad.cli import _build_parser, main
from ddad.detect import Detector

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST_RECONSTRUCT = "reconstruct:\n  timesteps: 20\n  steps: 1\n  ensemble: 1\n"
FAST_PARAMS = FAST_RECONSTRUCT + "score:\n  map: reconstruction\n"  # no training images needed


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a tiny trained model (models/trained/toy) and fast params, as the cwd."""
    monkeypatch.chdir(tmp_path)
    tiny_model_dir(tmp_path)
    (tmp_path / "params.yaml").write_text(FAST_PARAMS)
    return tmp_path


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_prints_a_verdict_per_image_and_writes_overlays(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    images = [str(write_gray(project / "in" / f"{i}.png", 0.5, seed=i)) for i in range(2)]
    code, out, _ = _run(["detect", *images, "--model", "toy", "--threshold", "0"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "model models/trained/toy: threshold 0.000 (given)"
    assert lines[1].startswith(f"DEFECT {images[0]}  score ")
    assert lines[1].endswith("  threshold 0.000")
    assert lines[2].startswith(f"DEFECT {images[1]}  score ")
    assert lines[3] == "2 of 2 images DEFECT; heat-map overlays in detections/"
    assert sorted(p.name for p in (project / "detections").iterdir()) == ["in_0.png", "in_1.png"]
    with Image.open(project / "detections" / "in_0.png") as overlay:
        assert overlay.size == (260, 260)  # the 20 x 20 photo, enlarged 13 times for its label


def test_detect_says_ok_below_the_threshold(project: Path, capsys: pytest.CaptureFixture) -> None:
    image = str(write_gray(project / "img.png", 0.5))
    argv = ["detect", image, "--model", "toy", "--threshold", "1e9", "--out", "pics"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.splitlines()[1].startswith(f"OK     {image}  score ")
    assert (project / "pics" / f"{project.name}_img.png").is_file()


def test_detect_learns_the_threshold_from_a_good_folder(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    for i in range(3):
        write_gray(project / "good" / f"{i}.png", 0.5, seed=i)
    image = str(write_gray(project / "img.png", 0.5))
    code, out, _ = _run(["detect", image, "--model", "toy", "--good-dir", "good"], capsys)
    assert code == 0
    assert "(calibrated on 3 good images in good)" in out.splitlines()[0]


def test_detect_without_a_threshold_source_says_what_to_pass(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    image = str(write_gray(project / "img.png", 0.5))
    code, out, err = _run(["detect", image, "--model", "toy"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "--threshold X" in err and "--good-dir DIR" in err


def test_detect_scores_with_the_features_map_by_default(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    """With no score.map in params.yaml, the score is the features map's, as the detector
    built with the default settings gives it."""
    root = project / "data" / "images"
    for i in range(3):
        write_gray(root / "toy" / "train" / "good" / f"{i}.png", 0.5, i)
    (project / "params.yaml").write_text(FAST_RECONSTRUCT)
    image = write_gray(project / "img.png", 0.5, seed=7)
    model_dir = project / "models" / "trained" / "toy"
    detector = Detector.load(model_dir, threshold=1.0, device="cpu", data_root=root)
    (expected,) = detector.score([image])
    argv = ["detect", str(image), "--model", "toy", "--threshold", str(expected.score / 2)]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.splitlines()[1].startswith(f"DEFECT {image}  score {expected.score:#.4g}  ")


def test_missing_image_exits_2_naming_it(project: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(
        ["detect", "nope/missing.png", "--model", "toy", "--threshold", "1"], capsys
    )
    assert code == 2
    assert err == "error: image nope/missing.png: no such file; check the path\n"
    assert not (project / "runs").exists()


def test_corrupt_image_exits_2(project: Path, capsys: pytest.CaptureFixture) -> None:
    (project / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = _run(["detect", "bad.png", "--model", "toy", "--threshold", "1"], capsys)
    assert code == 2 and "bad.png" in err and err.count("\n") == 1


def test_unknown_model_lists_the_trained_ones(project: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(["detect", "x.png", "--model", "ghost", "--threshold", "1"], capsys)
    assert code == 2
    assert "--model: 'ghost'" in err and "(found: toy)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--steps", "x"], "error: --steps: must be an integer in 1..999, got 'x'\n"),
        (
            ["bench", "--steps", "1000"],
            "error: --steps: must be an integer in 1..999, got '1000'\n",
        ),
        (
            ["bench", "--seed-share", "0"],
            "error: --seed-share: must be a number in (0, 1], got '0'\n",
        ),
        (
            ["bench", "--device", "tpu"],
            "error: --device: must be one of auto, cpu, cuda, got 'tpu'\n",
        ),
        (
            ["detect", "a.png", "--model", "toy", "--threshold", "nan"],
            "error: --threshold: must be a finite number, got 'nan'\n",
        ),
        (["detect", "a.png"], "error: the following arguments are required: --model\n"),
        ([], "error: the following arguments are required: COMMAND\n"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = _run(argv, capsys)
    assert (code, err) == (2, message)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("reconstruct:\n  ensemble: 0\n", "reconstruct.ensemble = 0 is not allowed; expected an"),
        ("score:\n  kernel_size: 4\n", "score.kernel_size = 4 is not allowed; expected 0 (auto)"),
        ("score:\n  map: pixels\n", "score.map = 'pixels' is not allowed; expected one of"),
        ("reconstruct:\n  timesteps_per_category:\n    toy: 0\n", "timesteps_per_category.toy = 0"),
        ("reconstruct:\n  timesteps: 950\n  jitter: 0.1\n", "reconstruct.jitter 0.1 takes t=950"),
        ("score:\n  map: [features\n", "params.yaml: line 3 is not valid YAML"),
    ],
)
def test_bad_params_value_names_the_key(
    project: Path, params: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    (project / "params.yaml").write_text(params)
    code, _, err = _run(["detect", "a.png", "--model", "toy", "--threshold", "1"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and message in err


def test_detect_help_says_where_the_threshold_comes_from_and_what_it_writes(
    capsys: pytest.CaptureFixture,
) -> None:
    code, out, _ = _run(["detect", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "--good-dir" in text
    assert "highest score of the held-out good images in runs/<category>/score/scores.csv" in text
    assert "overlay of each written to --out" in text
    assert "--out OUT folder for the overlay PNGs" in text


def test_baseline_prints_its_metrics_and_lit_shares_per_category(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mask = tmp_path / "toy" / "ground_truth" / "burn"
    for i in range(4):
        write_gray(tmp_path / "toy" / "train" / "good" / f"{i}.png", 0.4, seed=i)
        write_gray(tmp_path / "toy" / "test" / "good" / f"{i}.jpg", 0.4, seed=10 + i)
        write_gray(tmp_path / "toy" / "test" / "burn" / f"{i}.jpg", 0.95, seed=20 + i)
        write_gray(mask / f"{i}_mask.png", 1.0, seed=i)
    code, out, _ = _run(["baseline", "--data", str(tmp_path), "--image-size", "16", "24"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"per-pixel z-score baseline at 16x24 px (height x width), {tmp_path}, "
        "maps scored at the native resolution, image score topk_mean"
    )
    header = ["category", "half", "img_auc", "pixel_auc", "aupro", "lit_defective", "lit_good"]
    assert lines[1].split() == header
    assert lines[2].split()[:3] == ["toy", "confirmation", "1.0000"]
    assert lines[3].split()[:2] == ["toy", "tuning"]
    code, out, _ = _run(["baseline", "--data", str(tmp_path)], capsys)  # data.image_size: auto
    assert code == 0 and out.startswith("per-pixel z-score baseline at 32x32 px")  # 20 px, grown
    three = ["baseline", "--data", str(tmp_path), "--image-size", "8", "8", "8"]
    code, _, err = _run(three, capsys)
    assert code == 2 and "give one side or a height and width" in err


def test_baseline_on_a_missing_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = _run(["baseline", "--data", str(tmp_path / "none")], capsys)
    assert code == 2 and str(tmp_path / "none") in err


@pytest.mark.usefixtures("quick_peak")
def test_bench_times_a_trained_model_at_its_own_size(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = _run(["bench", "--model", "toy", "--image-size", "32"], capsys)
    assert code == 2 and "--channels/--image-size: not used with --model" in err
    code, out, _ = _run(
        ["bench", "--model", "toy", "--images", "1", "--seed-share", "1e-4", "--processes", "1"],
        capsys,
    )
    assert code == 0
    assert out.startswith("bench: tiny, 1 channel(s), 16x16, 1 random images in [-1, 1] (no test")
    assert "ddim 1 step from t=20, ensemble 1" in out


@pytest.mark.usefixtures("quick_peak")
def test_bench_searches_as_many_bank_images_as_the_score_stage_uses(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    category = project / "data" / "images" / "toy"
    for i in range(6):  # 2 of 6 become the typical map's images, 4 the bank
        write_gray(category / "train" / "good" / f"{i}.png", 0.5, i)
    write_gray(category / "test" / "good" / "0.png", 0.5)
    (project / "params.yaml").write_text(FAST_RECONSTRUCT + "score:\n  reference_images: 2\n")
    argv = ["bench", "--model", "toy", "--images", "1", "--seed-share", "1e-4", "--processes", "1"]
    code, out, _ = _run(argv, capsys)
    assert code == 0 and "1 test images of toy" in out
    assert " cells in 4 good images" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(["--version"], capsys)
    assert code == 0
    assert out == f"ddad {__version__}\n"


@pytest.mark.parametrize("command", [[], ["detect"], ["bench"], ["baseline"]])
def test_help_is_plain_text_that_defines_its_terms(
    command: list[str], capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = _run([*command, "--help"], capsys)
    assert code == 0
    assert "``" not in out
    if "seed" in out.replace("--seed-share", "").replace("SEED_SHARE", ""):
        assert "the seed (the reference DDAD code" in out


def test_every_argument_has_help() -> None:
    parser = _build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"ddad {name} {action.option_strings or action.metavar}: no help"
