"""evaluate: per-category and mean metrics, results.csv, metrics.json, defects.json and ROC
plot data.

Each category's test images are split once into a tuning and a confirmation half (ddad.data.halves;
``evaluate.halves: false`` scores all of them, as the seed did). Every reported figure is the
confirmation half's; the tuning half's are in metrics/tuning/, for choosing settings. Pixel
metrics compare each map, resized bilinearly, with its ground truth at the photograph's own
size (``evaluate.resolution: native``, as MVTec AD's evaluation does), so a defect smaller than
a model pixel still counts; ``model`` is the seed's way: masks shrunk to the model's size.
``lit_defective`` and ``lit_good`` say where a map lights: the share of defect-free pixels of the
defective and of the good test images above the detect threshold (chosen from the good
images' scores at ``detect.false_alarm_rate``, as ``ddad detect`` has it; the maps share the
image scores' units), so a map that lights the whole image around a defect shows, however
well it ranks. ``false_alarm_rate`` and ``miss_rate`` are the shares of good and defective
test images that threshold calls wrongly: what the asked rate costs in missed defects.
results.csv and metrics.json give each category's threshold and how many good scores it was
chosen from (``good_scores``).

A defective image without a mask counts for the image figures alone (ddad.evaluation.protocol):
a figure no image can give is empty (blank in results.csv, null in the JSON files), and a row
whose figures ground truth shaped has a ``note``, one line saying which defective images its
pixel figures leave out or why they are empty; evaluate prints each one. A mean row with an
empty figure says that every category's is, so `dvc metrics show`, which leaves a column of
nulls out, shows why beside it. A category of good parts only (no test images yet) has a row of
empty figures whose note says there is nothing to measure.

results.csv keeps the seed's four columns first (category, category_type, img_auc, pixel_auc).
metrics.json holds each category (with ``img_auc_se``, the AUROC's standard error at that many
images), the mean over all, the mean per category type and the tuning half; defects.json scores
each defect kind alone against the good test images (which kinds a map misses is what to work
on next). The same figures are one small flat file per row: metrics/mean.json (the mean over all
categories, the one file dvc.yaml declares a metric, so that `dvc exp show` and `dvc metrics
diff` fit a terminal), metrics/type/, metrics/category/, metrics/kind/<category>/ and
metrics/tuning/, which `dvc metrics show` and `diff` read when named (`--targets` for diff).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ddad.data.layout import DATA_DIR, METRICS_DIR, PLOTS_DIR, RUNS_DIR, test_images
from ddad.data.mvtec import MVTEC_CATEGORIES
from ddad.data.synthetic import SYNTHETIC_CATEGORIES
from ddad.evaluation.protocol import evaluate_maps, one_image_step
from ddad.maps.threshold import Threshold, scores_threshold
from ddad.params import detect_settings, protocol_from
from stages.common import run_stage, write_json

SEED_COLUMNS = ["category", "category_type", "img_auc", "pixel_auc"]
SMALL_HALF_STEP = 0.1  # a half with fewer than 10 good or 10 defective images gets a note
# UNet, backbone and feature-denoiser passes per image
COSTS = ("nfe_per_image", "backbone_passes_per_image", "denoiser_passes_per_image")
ROW_FOLDERS = ("type", "category", "kind", "tuning")  # under metrics/, as dvc.yaml lists them
NOTE = "note"  # the column and key of the line that says why a row's pixel figures are as they are
FALLBACK_TYPE = "texture"  # of a category neither data.category_types nor MVTec AD types
THRESHOLD_COLUMNS = ("threshold", "good_scores")  # the detect threshold, and its good scores' count
NOTHING_TO_MEASURE = "no test images yet: nothing to measure (ddad detect's threshold is learned)"


def category_type(data: dict[str, Any], category: str) -> str:
    """object or texture: data.category_types first, then the type the category has in the
    synthetic set (synthetic source) or in MVTec AD (mvtec, and folders with MVTec's names),
    else texture."""
    return data["category_types"].get(category, _known_types(data).get(category, FALLBACK_TYPE))


def guessed_type(data: dict[str, Any], category: str) -> str | None:
    """The line saying that ``category``'s type is the fallback, or None when it is known: a
    type decides which mean a category counts in, so a guess must not pass silently."""
    if category in data["category_types"] or category in _known_types(data):
        return None
    return (
        f"category {category!r}: type {FALLBACK_TYPE} (not an MVTec AD name; "
        "set data.category_types to change)"
    )


def _known_types(data: dict[str, Any]) -> dict[str, str]:
    return SYNTHETIC_CATEGORIES if data["source"] == "synthetic" else MVTEC_CATEGORIES


def category_metrics(category: str, params: dict[str, Any]) -> dict[str, Any]:
    """One category's figures (ddad.evaluation.protocol.evaluate_maps) from its scores and maps,
    the lit shares and verdict rates at its detect threshold (``scores_threshold``; NaN without
    good scores), which comes back as ``threshold``; each row's note, where it has one, beside
    its figures."""
    scores_csv = RUNS_DIR / category / "score" / "scores.csv"
    scores = pd.read_csv(scores_csv)
    chosen = scores_threshold(scores_csv, detect_settings(params).false_alarm_rate)
    if not (scores["split"] == "test").any():
        return _nothing_to_measure(params["evaluate"]["metrics"]) | {"threshold": chosen}
    threshold = chosen.value if chosen else float("nan")
    with np.load(RUNS_DIR / category / "score" / "maps.npz") as stored:
        keys, amaps = stored["keys"].astype(str), list(stored["maps"])
    test = scores[scores["split"] == "test"].set_index("key").loc[keys]  # the maps' order
    items = {f"test/{item.key}": item for item in test_images(DATA_DIR, category)}
    found = evaluate_maps(
        [items[key] for key in keys],
        test["score"].to_numpy(),
        amaps,
        replace(protocol_from(params), image_size=amaps[0].shape),  # the size train chose
        threshold,
    )
    said = found["notes"]
    return found | {
        "threshold": chosen,
        "confirmation": found["confirmation"] | _noted(said.get("confirmation")),
        "tuning": found["tuning"] | _noted(said.get("tuning")),
        "defects": {
            kind: figures | _noted(said["defects"].get(kind))
            for kind, figures in found["defects"].items()
        },
    }


def _nothing_to_measure(wanted: list[str]) -> dict[str, Any]:
    """A category of good parts only (no test images yet): every figure empty, and a note."""
    empty = {name: float("nan") for name in wanted} | _noted(NOTHING_TO_MEASURE)
    return {
        "confirmation": empty | {"img_auc_se": float("nan")},
        "tuning": empty,
        "defects": {},
        "images": {"good": 0, "defective": 0},
        "roc": ([], []),
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if not math.isnan(r[key])]
    return float(np.mean(values)) if values else float("nan")


def main(params: dict[str, Any], argv: list[str]) -> None:
    wanted = params["evaluate"]["metrics"]
    rows, defects, tuning, notes = [], {}, {}, []
    for category in params["data"]["categories"]:
        guess = guessed_type(params["data"], category)
        if guess:
            print(guess)
        recon, score = (
            json.loads((RUNS_DIR / category / stage / "summary.json").read_text())
            for stage in ("recon", "score")
        )
        row = {"category": category, "category_type": category_type(params["data"], category)}
        found = category_metrics(category, params)
        defects[category], tuning[category] = found["defects"], found["tuning"]
        fpr, tpr = found["roc"]
        row.update(found["confirmation"])
        row |= _threshold_columns(found["threshold"])
        notes += _small_half_note(category, **found["images"])
        if found["threshold"]:
            chosen = found["threshold"]
            notes.append(f"threshold of {category}: {chosen.value:#.4g}, {chosen.describe()}")
        row["nfe_per_image"] = recon["nfe_per_image"] + score["nfe_per_image"]
        row["backbone_passes_per_image"] = score["backbone_passes_per_image"]
        row["denoiser_passes_per_image"] = score["denoiser_passes_per_image"]
        rows.append(row)
        write_json(
            PLOTS_DIR / "roc" / f"{category}.json",
            [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)],
        )
    table = pd.DataFrame(rows).sort_values(["category_type", "category"])
    columns = SEED_COLUMNS + [c for c in table.columns if c not in SEED_COLUMNS + [NOTE]] + [NOTE]
    METRICS_DIR.mkdir(exist_ok=True)
    table[[c for c in columns if c in table.columns]].to_csv(
        METRICS_DIR / "results.csv", index=False, float_format="%.6f"
    )
    numeric = wanted + list(COSTS)
    report: dict[str, Any] = {"mean": _mean_row(rows, numeric, wanted)}
    for kind in sorted({r["category_type"] for r in rows}):
        report[f"mean_{kind}"] = _mean_row(
            [r for r in rows if r["category_type"] == kind], wanted, wanted
        )
    shown = [*numeric, "img_auc_se", *THRESHOLD_COLUMNS, NOTE]
    report["categories"] = {r["category"]: {k: r[k] for k in shown if k in r} for r in rows}
    report["tuning"] = {"mean": _mean_row(list(tuning.values()), wanted, wanted)} | tuning
    write_json(METRICS_DIR / "metrics.json", _rounded(report))
    write_json(METRICS_DIR / "defects.json", _rounded(defects))
    _write_rows(report, defects, wanted)
    print(_shown(table))
    for note in notes + _note_lines(rows, defects):
        print(note)
    by_kind = pd.DataFrame(
        [{"category": c, "defect": k} | v for c, kinds in defects.items() for k, v in kinds.items()]
    )
    if not by_kind.empty:
        print("\neach defect kind against the good test images:")
        print(_shown(by_kind))
    print("\nthe tuning half (choose settings on these, report the table above):")
    print(_shown(pd.DataFrame(report["tuning"]).T, index=True))


def _threshold_columns(chosen: Threshold | None) -> dict[str, float]:
    """The detect threshold and how many good scores it was chosen from (NaN without any)."""
    if chosen is None:
        return dict.fromkeys(THRESHOLD_COLUMNS, float("nan"))
    return {"threshold": chosen.value, "good_scores": chosen.good}


def _noted(note: str | None) -> dict[str, str]:
    """The ``note`` entry of a row: none when nothing needs saying."""
    return {NOTE: note} if note else {}


def _mean_row(rows: list[dict[str, Any]], keys: list[str], wanted: list[str]) -> dict[str, Any]:
    """The mean of ``keys`` over ``rows``, with a note naming the asked-for figures that are
    empty in every row (`dvc metrics show` leaves a column of nulls out without a word)."""
    means = {k: _mean(rows, k) for k in keys}
    empty = [k for k in wanted if math.isnan(means[k])]
    return means | _noted(f"{', '.join(empty)}: empty in every category" if empty else None)


def _note_lines(rows: list[dict[str, Any]], defects: dict[str, dict[str, Any]]) -> list[str]:
    """The notes of the categories' rows, a line each, and of their defect kinds' where they
    say something else (a category without masks has the same note for every kind)."""
    said = {row["category"]: row.get(NOTE) for row in rows}
    lines = [f"note: {category}: {note}" for category, note in said.items() if note]
    return lines + [
        f"note: {category}/{kind}: {found[NOTE]}"
        for category, kinds in defects.items()
        for kind, found in kinds.items()
        if found.get(NOTE, said[category]) != said[category]
    ]


def _shown(table: pd.DataFrame, index: bool = False) -> str:
    """A table for the terminal, its notes left to their own lines."""
    return table.drop(columns=NOTE, errors="ignore").to_string(
        index=index, float_format=lambda v: f"{v:.4f}"
    )


def _small_half_note(category: str, good: int, defective: int) -> list[str]:
    """A line when the confirmation half is too small to tell two settings apart."""
    step = one_image_step(good, defective)
    if step <= SMALL_HALF_STEP or not good + defective:  # no image: the row's note says so
        return []
    return [
        f"note: {category}'s confirmation half holds {good} good and {defective} defective "
        f"images: one image can move its image AUROC by {step:.2f}, and its pixel figures as "
        "much; settings closer than that are not told apart here"
    ]


def _write_rows(
    report: dict[str, Any], defects: dict[str, dict[str, Any]], wanted: list[str]
) -> None:
    """One flat file per row for DVC: the mean over all categories, the mean per type, each
    category, and each of its defect kinds; the asked-for metrics, and where they belong to the
    row the network passes per image (``passes``: UNet passes, partial ones too, plus a
    pretrained backbone's; results.csv and metrics.json keep the two apart), one column so that
    `dvc metrics show` fits a terminal."""
    for folder in ROW_FOLDERS:  # declared outputs, made even when empty (no defect kind yet)
        shutil.rmtree(METRICS_DIR / folder, ignore_errors=True)
        (METRICS_DIR / folder).mkdir()
    rows = {"mean": report["mean"]}
    rows |= {
        f"type/{k.removeprefix('mean_')}": v for k, v in report.items() if k.startswith("mean_")
    }
    for category, found in report["categories"].items():
        rows[f"category/{category}"] = found
        rows |= {f"kind/{category}/{kind}": v for kind, v in defects[category].items()}
    rows |= {f"tuning/{name}": v for name, v in report["tuning"].items()}
    for name, row in rows.items():
        flat = {k: row[k] for k in wanted}
        if all(cost in row for cost in COSTS):
            flat["passes"] = sum(row[cost] for cost in COSTS)
        flat |= _noted(row.get(NOTE))
        write_json(METRICS_DIR / f"{name}.json", _rounded(flat))


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


if __name__ == "__main__":
    run_stage(main)
