"""detector@<category>: what ``ddad detect`` needs, in one folder to carry to the line's PC.

Loads the category's trained model with the settings the score stage scored with and its
threshold chosen from the good images' scores at ``detect.false_alarm_rate``, and writes it to
models/detectors/<category>/ (ddad.detect.Detector.save): the settings, the good images the
map learns from, the good scores and how the threshold was chosen, and the UNet's weights only
when the map needs them. ``ddad detect --model models/detectors/<category>`` then runs from any
folder, with no params.yaml and no data around it. A stage of its own, so that a new
false-alarm rate re-runs this, evaluate and plot, and not the scoring.
"""

from __future__ import annotations

import shutil
from typing import Any

from ddad.data.layout import DETECTORS_DIR, TRAINED_DIR
from ddad.detect import Detector
from ddad.params import detect_settings, plan_from, score_settings
from stages.common import run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    category = argv[0]
    data = params["data"]
    detector = Detector.load(
        TRAINED_DIR / category,
        plan=plan_from(params, category),
        score=score_settings(params),
        device=params["device"],
        resize=data["resize"],
        normalization=data["normalization"],
        seed=params["reconstruct"]["seed"],
        false_alarm_rate=detect_settings(params).false_alarm_rate,
    )
    out = DETECTORS_DIR / category
    shutil.rmtree(out, ignore_errors=True)
    detector.save(out)
    size = sum(path.stat().st_size for path in out.iterdir())
    print(
        f"detector@{category}: {out} ({size / 1e6:.1f} MB), threshold {detector.threshold:#.4g}: "
        f"{detector.threshold_source}"
    )


if __name__ == "__main__":
    run_stage(main)
