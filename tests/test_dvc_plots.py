"""`dvc plots show` on the committed outputs: the heat-map overviews and the ROC and loss charts,
all pictures, which show offline; none of dvc's own charts, whose script comes from the web."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddad.evaluation import viz
from stages import plot

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def test_plots_show_renders_every_overview_and_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path)
    ignored = shutil.ignore_patterns("images", "charts")
    shutil.copytree(REPO / "plots", tmp_path / "plots", ignore=ignored)
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    categories = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["categories"]
    monkeypatch.chdir(tmp_path)
    for path, figure in plot.summary_figures(categories).items():  # as the plot stage draws them
        viz.save_figure(figure, path)
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    subprocess.run([DVC, "init", "-q", "--no-scm"], cwd=tmp_path, check=True, env=env)
    subprocess.run(
        [DVC, "plots", "show", "-o", "out"], cwd=tmp_path, check=True, env=env, capture_output=True
    )
    html = (tmp_path / "out" / "index.html").read_text()
    images = [f"overviews/{category}" for category in categories] + ["charts/roc", "charts/loss"]
    for image in images:
        source = f"static/workspace_plots_{image.replace('/', '_')}.png"
        assert f'<img src="{source}">' in html
        shown = (tmp_path / "out" / source).read_bytes()
        assert shown == (tmp_path / "plots" / f"{image}.png").read_bytes()
    assert html.count("<img") == len(images)
    assert "<script" not in html and "http" not in html  # nothing to fetch: no blank box offline
