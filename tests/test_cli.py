"""The ddad command: exit codes, one-line errors, detect's inputs, output, rows and files,
baseline."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_model import tiny_model_dir, write_gray

from ddad import __version__, detect
from ddad.cli import _build_parser, main
from ddad.data.preprocess import model_input as read_model_input
from ddad.detect import Detector
from ddad.maps.scoring import ScoreSettings

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
    assert code == 1  # a DEFECT
    lines = out.splitlines()
    assert lines[0] == "model models/trained/toy: threshold 0.000 (given)"
    assert lines[1].startswith("settings from params.yaml: reconstruction-error map; input 16 px")
    assert lines[2].startswith(f"DEFECT {images[0]}  score ")
    assert lines[2].endswith("  threshold 0.000")
    assert lines[3].startswith(f"DEFECT {images[1]}  score ")
    assert lines[4] == "2 of 2 images DEFECT; heat-map overlays in detections/"
    assert sorted(p.name for p in (project / "detections").iterdir()) == ["in_0.png", "in_1.png"]
    with Image.open(project / "detections" / "in_0.png") as overlay:
        assert overlay.size == (260, 260)  # the 20 x 20 photo, enlarged 13 times for its label


def test_detect_says_ok_below_the_threshold(project: Path, capsys: pytest.CaptureFixture) -> None:
    image = str(write_gray(project / "img.png", 0.5))
    argv = ["detect", image, "--model", "toy", "--threshold", "1e9", "--out", "pics"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.splitlines()[2].startswith(f"OK     {image}  score ")
    assert (project / "pics" / f"{project.name}_img.png").is_file()


def test_detect_learns_the_threshold_from_a_good_folder(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    for i in range(3):
        write_gray(project / "good" / f"{i}.png", 0.5, seed=i)
    image = str(write_gray(project / "img.png", 0.5))
    code, out, _ = _run(["detect", image, "--model", "toy", "--good-dir", "good"], capsys)
    assert code == 0
    assert out.splitlines()[0].endswith("; calibrated on 3 good images in good)")


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
    assert code == 1
    assert out.splitlines()[2].startswith(f"DEFECT {image}  score {expected.score:#.4g}  ")


def _truncated(path: Path) -> Path:
    data = write_gray(path, 0.5).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a picture\n")
    return path


def _empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _colour(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (200, 30, 30)).save(path)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as table:
        return list(csv.DictReader(table))


def _line_folder(project: Path, good: int) -> list[Path]:
    """``good`` gray photos and two broken files in line/ (one in a subfolder); the broken
    ones' paths as the command names them, from the project folder."""
    for i in range(good):
        write_gray(project / "line" / "cam" / f"{i:03d}.png", 0.5, seed=i)
    _truncated(project / "line" / "cam" / "007b.png")
    _text(project / "line" / "x.png")
    return [Path("line/cam/007b.png"), Path("line/x.png")]


def test_a_folder_with_two_bad_files_scores_the_rest_and_names_them(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    """The issue's must-hold, at 20 good images: the two bad ones are named with their reason
    in the output and the CSV, the others scored, and the exit status tells a DEFECT apart."""
    bad = _line_folder(project, good=20)
    argv = ["detect", "line", "--model", "toy", "--csv", "out.csv", "--no-overlays"]
    code, out, err = _run([*argv, "--threshold", "1e9"], capsys)
    assert code == 3  # unreadable files, no DEFECT
    lines = out.splitlines()
    assert lines[-1] == "0 of 20 images DEFECT; 2 files unreadable, named above"
    named = [line for line in lines if line.startswith("UNREADABLE ")]
    assert named == [
        f"UNREADABLE {bad[0]}  image {bad[0]} is truncated or corrupt "
        "(image file is truncated); export it again or remove it",
        f"UNREADABLE {bad[1]}  image {bad[1]} is not an image Pillow can read; "
        "remove it or save it as PNG",
    ]
    rows = _rows(project / "out.csv")
    assert len(rows) == 22 and sum(row["verdict"] == "OK" for row in rows) == 20
    unread = [row for row in rows if row["verdict"] == "UNREADABLE"]
    assert [(row["path"], row["score"]) for row in unread] == [(str(bad[0]), ""), (str(bad[1]), "")]
    assert [row["reason"] for row in unread] == [line.split("  ", 1)[1] for line in named]
    assert "detect: " in err  # the progress bar, on stderr
    code, out, _ = _run([*argv, "--threshold", "0"], capsys)
    assert code == 1  # a DEFECT wins over the unreadable files
    assert out.splitlines()[-1] == "20 of 20 images DEFECT; 2 files unreadable, named above"
    assert sum(row["verdict"] == "DEFECT" for row in _rows(project / "out.csv")) == 20


@pytest.mark.parametrize(
    ("threshold", "broken", "status"),
    [("1e9", False, 0), ("0", False, 1), ("0", True, 1), ("1e9", True, 3)],
)
def test_the_exit_status_says_what_a_controller_acts_on(
    project: Path, threshold: str, broken: bool, status: int, capsys: pytest.CaptureFixture
) -> None:
    images = [str(write_gray(project / "img.png", 0.5))]
    if broken:
        images.append(str(_empty(project / "empty.png")))
    code, _, _ = _run(["detect", *images, "--model", "toy", "--threshold", threshold], capsys)
    assert code == status


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("cut.png", _truncated, "is truncated or corrupt"),
        ("notes.png", _text, "is not an image Pillow can read"),
        ("red.png", _colour, "is colour but the model was trained on gray images"),
        ("zero.png", _empty, "is empty (0 bytes)"),
        ("001_mask.png", lambda path: write_gray(path, 1.0), "is a ground-truth mask"),
        ("ground_truth/crack/001.png", lambda path: write_gray(path, 1.0), "ground-truth mask"),
        ("gone.png", lambda path: path, "No such file or directory"),
    ],
)
def test_each_kind_of_bad_file_is_named_with_its_reason(
    project: Path,
    name: str,
    make: Callable[[Path], Path],
    reason: str,
    capsys: pytest.CaptureFixture,
) -> None:
    bad = str(make(project / "in" / name))
    good = str(write_gray(project / "in" / "ok.png", 0.5))
    argv = ["detect", bad, good, "--model", "toy", "--threshold", "1e9", "--jsonl", "out.jsonl"]
    code, out, _ = _run(argv, capsys)
    assert code == 3
    first, second = out.splitlines()[2:4]
    assert first.startswith(f"UNREADABLE {bad}  ") and reason in first
    assert second.startswith(f"OK     {good}  score ")
    rows = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    assert rows[0]["verdict"] == "UNREADABLE" and reason in rows[0]["reason"]
    assert rows[0]["score"] is None and rows[0]["overlay"] is None
    assert rows[1]["verdict"] == "OK" and rows[1]["reason"] is None


def test_a_folder_is_read_recursively_for_image_files_only(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    """Subfolders in order, any image suffix in any case; notes, hidden files and what hides
    in hidden folders are not inputs."""
    line = project / "line"
    wanted = [
        write_gray(line / "a.png", 0.5),
        write_gray(line / "b" / "c.JPG", 0.5),
        write_gray(line / "b" / "d" / "e.tif", 0.5),
        write_gray(line / "f.bmp", 0.5),
    ]
    (line / "notes.txt").write_text("shift 2\n")
    write_gray(line / ".g.png", 0.5)
    write_gray(line / ".thumbs" / "h.png", 0.5)
    argv = ["detect", "line", "--model", "toy", "--threshold", "1e9", "--csv", "out.csv"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert [row["path"] for row in _rows(project / "out.csv")] == [
        str(p.relative_to(project)) for p in wanted
    ]
    assert out.splitlines()[-1] == "0 of 4 images DEFECT; heat-map overlays in detections/"


def test_paths_come_from_the_command_line_globs_and_standard_input_in_order(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        write_gray(project / "cam" / f"{name}.png", 0.5)
    write_gray(project / "more" / "d.png", 0.5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("cam/c.png\n\n  more  \n"))
    argv = ["detect", "cam/a.png", "-", "cam/[ab].png", "--model", "toy", "--threshold", "1e9"]
    code, out, _ = _run([*argv, "--no-overlays", "--csv", "out.csv"], capsys)
    assert code == 0
    expected = ["cam/a.png", "cam/c.png", "more/d.png", "cam/a.png", "cam/b.png"]
    assert [row["path"] for row in _rows(project / "out.csv")] == expected
    assert out.splitlines()[-1] == "0 of 5 images DEFECT"
    assert not (project / "detections").exists()


def test_no_image_in_the_inputs_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "empty").mkdir()
    code, out, err = _run(["detect", "empty", "--model", "toy", "--threshold", "1"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: no images in empty; give image files (.png, ")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = _run(["detect", "-", "--model", "toy", "--threshold", "1"], capsys)
    assert code == 2 and err.splitlines()[-1].startswith("error: no images in -; ")


def test_rows_are_on_disk_as_each_batch_is_judged(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller reads the rows as they come, and Ctrl-C keeps those already judged: reading
    the second batch (--batch 2) finds the first batch's two rows in each file, then the run
    is interrupted."""
    for i in range(4):
        write_gray(project / "line" / f"{i}.png", 0.5, seed=i)
    seen: list[tuple[int, int]] = []

    def model_input(path: Path, *options: Any) -> np.ndarray:
        if path.name == "2.png":
            csv_rows = len(_rows(project / "out.csv"))
            seen.append((csv_rows, len((project / "out.jsonl").read_text().splitlines())))
            raise KeyboardInterrupt
        return read_model_input(path, *options)

    monkeypatch.setattr(detect, "model_input", model_input)
    argv = ["detect", "line", "--model", "toy", "--threshold", "1", "--batch", "2"]
    code, _, err = _run([*argv, "--csv", "out.csv", "--jsonl", "out.jsonl"], capsys)
    assert (code, err.splitlines()[-1]) == (130, "interrupted")
    assert seen == [(2, 2)]
    assert [row["path"] for row in _rows(project / "out.csv")] == ["line/0.png", "line/1.png"]


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


def test_detect_runs_a_carried_model_from_any_folder_with_its_own_settings(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder the detector stage writes, copied away from the project, is all detect
    needs: no params.yaml, data/ or runs/ there, and the settings it prints are its own."""
    for i in range(3):
        write_gray(project / "data" / "images" / "toy" / "train" / "good" / f"{i}.png", 0.5, i)
    csv = project / "runs" / "toy" / "score" / "scores.csv"
    csv.parent.mkdir(parents=True)
    good = {"split": ["good_fold"] * 99, "score": [i / 100 for i in range(99)]}
    pd.DataFrame(good).to_csv(csv, index=False)
    detector = Detector.load(
        project / "models" / "trained" / "toy",
        score=ScoreSettings(map="features", backbone="efficientnet-lite0", backbone_size=32),
        device="cpu",
        data_root=project / "data" / "images",
        runs_dir=project / "runs",
    )
    detector.save(project / "models" / "detectors" / "toy")
    line = project.parent / "line"
    shutil.copytree(project / "models" / "detectors" / "toy", line / "model")
    image = str(write_gray(line / "part.png", 0.5, seed=9))
    (expected,) = detector.score([image])
    shutil.rmtree(project)
    monkeypatch.chdir(line)
    code, out, err = _run(["detect", image, "--model", "model", "--device", "cpu"], capsys)
    assert code == int(expected.is_defect), err
    lines = out.splitlines()
    assert lines[0] == (
        "model model: threshold 0.9800 (the highest of 99 good images' scores, for a false-alarm "
        "rate of 0.01: 1.00% of good parts expected flagged; in model/detector.json)"
    )
    assert lines[1].startswith("settings from model/detector.json: feature map (1 efficientnet")
    assert "score settings beyond the defaults: backbone_size=32" in lines[1]
    verdict = f"{expected.verdict:<6} {image}  score {expected.score:#.4g}  threshold 0.9800"
    assert lines[2] == verdict
    assert not (line / "params.yaml").exists() and sorted(os.listdir(line)) == [
        "detections",
        "model",
        "part.png",
    ]
    code, out, _ = _run(["detect", image, "--model", "model", "--false-alarm-rate", "0.02"], capsys)
    assert "the 2nd highest of 99 good images' scores" in out.splitlines()[0]


def test_detect_help_says_where_the_threshold_comes_from_and_what_it_writes(
    capsys: pytest.CaptureFixture,
) -> None:
    code, out, _ = _run(["detect", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "--good-dir" in text
    assert "a carried detector folder (models/detectors/<category>" in text
    assert "chosen from good images' scores at the false-alarm rate" in text
    assert "runs/<category>/score/scores.csv" in text and "--false-alarm-rate" in text
    assert "overlay of each written to --out" in text
    assert "--out OUT folder for the overlay PNGs" in text
    rows = out[out.index("exit status") :].splitlines()[1:]
    assert [row.split()[0] for row in rows if row[2] != " "] == ["0", "1", "2", "3", "130"]
    assert "DEFECT, whether or not some inputs were unreadable" in text


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
    assert " in 4 good images" in out


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
