"""The README as a user meets it: its figures are what the committed run measured, and its
commands, run as written in a clone, keep a user's images and leave the clone clean."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dvc_project import ENV, TINY, make_project, merged, ran_stages, run_in
from PIL import Image

from ddad.data.synthetic import generate_dataset
from ddad.maps.threshold import DetectSettings, scores_threshold
from stages.evaluate import NOTHING_TO_MEASURE

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FIGURES = ["img_auc", "pixel_auc", "aupro", "img_f1max", "pixel_ap", "lit_defective"]


def section(heading: str) -> str:
    """The README's text under ``## heading``, up to the next heading of that level."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert found, f"README has no section {heading!r}"
    return found.group(1)


def commands(heading: str) -> list[str]:
    """The lines of the section's first ```bash block, each a command as a user types it."""
    block = re.search(r"```bash\n(.*?)```", section(heading), re.S)
    assert block, f"README's {heading!r} has no bash block"
    return [line for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def test_the_results_table_is_the_committed_run():
    rows = [
        [cell.strip(" *") for cell in line.strip("|").split("|")]
        for line in section("Results").splitlines()
        if re.match(r"\| \**\w", line) and "category" not in line
    ]
    shown = {row[0]: [float(v) for v in row[2:8]] for row in rows[:4]}
    results = pd.read_csv(REPO / "metrics" / "results.csv").set_index("category")
    mean = yaml.safe_load((REPO / "metrics" / "mean.json").read_text())
    expected = {c: [round(results.loc[c, f], 3) for f in FIGURES] for c in results.index}
    expected["mean"] = [round(mean[f], 3) for f in FIGURES]
    assert shown == expected


def _bash(
    project: Path, line: str, check: bool = True, env: dict[str, str] = ENV
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=900
    )
    if check and result.returncode:
        raise AssertionError(f"{line} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _files(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _clean(project: Path) -> None:
    assert _bash(project, "git status --porcelain").stdout == ""
    assert "up to date" in run_in(project, "dvc", "status").stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of a project whose tiny default run is committed, after its own `dvc repro`."""
    origin = make_project(tmp_path / "origin")
    run_in(origin, "dvc", "repro")
    _bash(origin, "git add -A && git -c user.name=t -c user.email=t@t commit -qm run")
    _bash(tmp_path, "git clone -q origin clone")
    clone = tmp_path / "clone"
    run_in(clone, "dvc", "repro")
    return clone


@pytest.mark.slow
def test_a_fresh_clone_reproduces_and_the_experiments_go_back(clone):
    _clean(clone)  # the same bytes as the committed run: nothing to add to git
    for line in commands("Experiments, and back"):
        _bash(clone, line)
        if line.startswith("git checkout HEAD"):
            _clean(clone)


@pytest.mark.slow
def test_own_images_survive_every_readme_command_and_a_failing_run(clone, tmp_path):
    dataset = tmp_path / "dataset"
    syn = TINY["data"]["synthetic"]
    generate_dataset(
        dataset,
        ["washer"],
        n_train=syn["train"],
        n_test_good=syn["test_good"],
        n_test_defect=syn["test_defect"],
        progress=False,
    )
    (dataset / "washer").rename(dataset / "my_part")
    copy, run = [
        line.replace("/path/to/dataset", str(dataset)) for line in commands("Your own images")[:2]
    ]
    _bash(clone, copy)
    own = clone / "data" / "own" / "my_part"
    kept = _files(own)
    assert kept == _files(dataset / "my_part") and kept
    typo = _bash(clone, run.replace("my_part", "my_prat"), check=False)
    assert typo.returncode and "no category 'my_prat'" in typo.stderr
    assert _files(own) == kept
    _bash(clone, run)
    assert _files(own) == kept
    assert list(pd.read_csv(clone / "metrics" / "results.csv")["category"]) == ["my_part"]
    back = next(line for line in commands("Experiments, and back") if "git checkout" in line)
    _bash(clone, back)
    assert _files(own) == kept
    params = yaml.safe_load((clone / "params.yaml").read_text())
    failing = {"data": {"source": "folder", "categories": ["my_part", "absent"]}}
    (clone / "params.yaml").write_text(yaml.safe_dump(merged(params, failing)))
    assert run_in(clone, "dvc", "repro", check=False).returncode
    assert _files(own) == kept
    _bash(clone, back)
    assert _files(own) == kept
    assert _bash(clone, "git status --porcelain").stdout == ""
    # every fetch_data stage watches data/own: the defaults' regenerate, and nothing else runs
    assert ran_stages(run_in(clone, "dvc", "repro")) == ["fetch_data@stripes"]
    shutil.rmtree(clone / "data" / "images")
    _bash(clone, "dvc checkout")
    assert _files(own) == kept


def _photographs(folder: Path, images: list[Path], size: tuple[int, int]) -> Path:
    """``images`` as photographs of another (width, height) in ``folder``, named
    <its folder>_<its name>."""
    folder.mkdir(parents=True)
    for path in images:
        with Image.open(path) as image:
            image.resize(size).save(folder / f"{path.parent.name}_{path.name}")
    return folder


def test_the_first_day_with_good_parts_only_runs_as_written(tmp_path):
    """The own-images block, run as written on photographs of good parts alone: `dvc exp run`
    reads them at a size chosen from them, says there is nothing to measure, draws the held-out
    images' maps, and `ddad detect` then judges new photographs at the threshold it learned."""
    project = make_project(tmp_path / "project", {"data": {"image_size": "auto"}})
    _bash(project, "git add -A && git -c user.name=t -c user.email=t@t commit -qm tiny")
    stripes = tmp_path / "synthetic" / "stripes"
    generate_dataset(stripes.parent, ["stripes"], n_train=12, n_test_good=1, n_test_defect=1)
    dataset = tmp_path / "dataset"
    _photographs(dataset / "my_part/train/good", sorted(stripes.glob("train/good/*")), (80, 48))
    new = _photographs(tmp_path / "new_parts", sorted(stripes.glob("test/*/*")), (100, 60))
    paths = {"/path/to/dataset": str(dataset), "/path/to/new_parts": str(new)}
    copy, run, detect = [
        re.sub("|".join(paths), lambda found: paths[found[0]], line)
        for line in commands("Your own images")
    ]
    _bash(project, copy)
    said = "train@my_part: input 48 x 80 px (data.image_size auto: the training photographs'"
    assert _bash(project, run).stdout.count(said) == 1
    meta = json.loads((project / "models" / "trained" / "my_part" / "meta.json").read_text())
    assert meta["image_size"] == [48, 80]
    score = project / "runs" / "my_part" / "score"
    with np.load(score / "maps.npz") as stored:
        held_out = [f"val/{Path(p).stem}" for p in meta["validation_images"]]
        assert stored["keys"].tolist() == held_out and stored["maps"].shape[1:] == (48, 80)
    row = json.loads((project / "metrics" / "category" / "my_part.json").read_text())
    assert row["note"] == NOTHING_TO_MEASURE and row["img_auc"] is None and row["passes"] == 1.0
    shown = run_in(project, "dvc", "metrics", "show").stdout
    assert "empty in every category" in shown and "nan" not in shown.lower()
    assert (project / "plots" / "overviews" / "my_part.png").is_file()
    shown = _bash(project, detect.replace("ddad", "python -m ddad.cli", 1), check=False)
    judged = shown.stdout.splitlines()
    threshold = scores_threshold(score / "scores.csv", DetectSettings().false_alarm_rate).value
    assert judged[0].startswith(f"model models/detectors/my_part: threshold {threshold:#.4g} (")
    verdicts = [line.split()[0] for line in judged[2:-1]]
    assert len(verdicts) == 2 and set(verdicts) <= {"OK", "DEFECT"}
    assert shown.returncode == int("DEFECT" in verdicts), shown.stderr
    assert all(line.endswith(f"threshold {threshold:#.4g}") for line in judged[2:-1])


def transcript(heading: str) -> tuple[str, list[str]]:
    """The section's first ``$ command`` block: the command and the lines it printed."""
    block = re.search(r"```\n\$ (.*?)```", section(heading), re.S)
    assert block, f"README's {heading!r} has no $ transcript"
    command, *printed = block.group(1).replace("\\\n", " ").splitlines()
    return command, printed


@pytest.mark.slow
def test_the_main_job_on_a_fresh_clone_leaves_it_clean_and_prints_the_readmes_figures(tmp_path):
    """The README's first command (the install apart: this test runs in it) on a clone of
    this repository, then its `ddad detect` example, compared line by line, and its line's
    1,000 paths on standard input, a row each in the CSV."""
    _bash(tmp_path, f"git clone -q {REPO} clone")
    clone = tmp_path / "clone"
    # torch's own thread count, as a user's shell has it: the committed run was made so, and
    # another count rounds sums differently
    _bash(clone, "dvc repro", env={k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"})
    _clean(clone)
    command, printed = transcript("Inspecting new images: `ddad detect`")
    shown = _bash(clone, command, check=False)
    assert shown.returncode == 1, shown.stderr  # the example finds DEFECTs
    assert shown.stdout.splitlines() == printed
    (line,) = commands("Inspecting new images: `ddad detect`")
    judged = _bash(clone, line, check=False)
    assert judged.returncode == 1, judged.stderr  # the tiles' defects among them
    assert len(pd.read_csv("/tmp/line1000.csv")) == 1000
    command, printed = transcript("Speed, and several GPUs")
    timed = [_untimed(line) for line in _bash(clone, command).stdout.splitlines()]
    assert [line for line in printed if _untimed(line) not in timed] == []


def _untimed(line: str) -> str:
    """A line of ``ddad bench``'s output without what the machine's speed sets: a table row
    (two or more spaces apart) cut to its first four columns, the procedure and its passes."""
    cells = re.split(r"\s{2,}", line.strip())
    return "  ".join(cells[:4]) if len(cells) > 4 else line
