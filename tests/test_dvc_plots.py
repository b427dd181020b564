"""`dvc plots show` on the committed outputs: the heat-map overviews stand beside the curves."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def test_plots_show_renders_every_category_overview(tmp_path: Path) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path)
    shutil.copytree(REPO / "plots", tmp_path / "plots", ignore=shutil.ignore_patterns("images"))
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    subprocess.run([DVC, "init", "-q", "--no-scm"], cwd=tmp_path, check=True, env=env)
    subprocess.run(
        [DVC, "plots", "show", "-o", "out"], cwd=tmp_path, check=True, env=env, capture_output=True
    )
    html = (tmp_path / "out" / "index.html").read_text()
    categories = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["categories"]
    for category in categories:
        image = f"static/workspace_plots_overviews_{category}.png"
        assert f'<img src="{image}">' in html
        assert (tmp_path / "out" / image).stat().st_size > 10_000
        assert f"plots/train/{category}.json" in html  # its loss curve, drawn by vega
