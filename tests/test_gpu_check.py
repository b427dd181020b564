"""The prepared GPU check, tried on the CPU with --quick: one JSON with every section."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_quick_check_writes_one_json_with_every_section_in_minutes(tmp_path):
    out = tmp_path / "check.json"
    start = time.perf_counter()
    done = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--out", str(out)],
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(out)
    record = json.loads(out.read_text())
    assert {row["batch"] for row in record["passes"]} == {1, 8, 32}
    assert all({"passes_per_second", "peak_memory_bytes"} <= set(row) for row in record["passes"])
    for name in ("seed", "default"):
        assert record["procedures"][name]["mvtec_test_seconds"] > 0
    assert record["procedures"]["default"]["nfe_per_image"] == 0  # Lite0's pass, no UNet's
    assert record["ddad_map"]["default"]["nfe_per_image"] == 4 * 3  # ddim 4 steps, 3 members
    assert record["ddad_map"]["default_map"].startswith("DDAD's map")
    assert record["dvc_repro"]["finished"], record["dvc_repro"]
    assert seconds < 300
