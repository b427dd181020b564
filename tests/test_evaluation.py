"""The evaluation protocol: seeded halves per defect kind, ground truth at the photograph's size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from ddad.data.halves import confirmation_half
from ddad.data.imageio import resize_map
from ddad.data.layout import test_images
from ddad.evaluation.metrics import DEFECT_PIXEL_METRICS, METRIC_NAMES, auroc_standard_error
from ddad.evaluation.protocol import Protocol, evaluate_maps, one_image_step
from stages import evaluate
from stages.evaluate import _small_half_note

DVC = Path(sys.executable).parent / "dvc"


def test_halves_split_each_kind_and_do_not_follow_list_order() -> None:
    keys = [f"{kind}/{i}" for kind, n in (("good", 7), ("crack", 4), ("hole", 1)) for i in range(n)]
    kinds = [key.split("/")[0] for key in keys]
    confirm = confirmation_half(keys, kinds, seed=0)
    counts = {kind: int(confirm[np.array(kinds) == kind].sum()) for kind in set(kinds)}
    assert counts == {"good": 4, "crack": 2, "hole": 1}  # the odd image out is confirmed
    shuffled = confirmation_half(keys[::-1], kinds[::-1], seed=0)
    assert np.array_equal(shuffled[::-1], confirm)
    assert not np.array_equal(confirmation_half(keys, kinds, seed=1), confirm)


def test_adding_an_image_moves_at_most_one_other_across() -> None:
    keys = [f"good/{i}" for i in range(20)]
    before = dict(zip(keys, confirmation_half(keys, ["good"] * 20), strict=True))
    grown = keys + ["good/new"]
    after = dict(zip(grown, confirmation_half(grown, ["good"] * 21), strict=True))
    assert sum(before[k] != after[k] for k in keys) <= 1


def test_halves_refuse_repeated_keys() -> None:
    with pytest.raises(ValueError, match="distinct"):
        confirmation_half(["a", "a"], ["good", "good"])


def test_auroc_standard_error_matches_hanley_and_mcneil() -> None:
    assert auroc_standard_error(0.9, 40, 40) == pytest.approx(0.0360, abs=5e-4)
    assert auroc_standard_error(1.0, 10, 10) == 0.0
    assert np.isnan(auroc_standard_error(float("nan"), 10, 10))
    assert np.isnan(auroc_standard_error(0.8, 0, 10))


def test_resize_map_is_bilinear_to_height_and_width() -> None:
    ramp = np.array([[0.0, 1.0]], dtype=np.float32)
    wide = resize_map(ramp, (3, 8))
    assert wide.shape == (3, 8) and wide.dtype == np.float32
    assert np.all(np.diff(wide[0]) >= 0) and wide[0, 0] == 0.0 and wide[0, -1] == 1.0


def _category(root: Path, pit: tuple[int, int] | None, masked: int = 4) -> None:
    """Good and defective 40 x 100 photographs; each defect a 2 x 2 pit at ``pit`` (None: the
    whole image), its mask drawn for the first ``masked`` (no ground_truth folder for none)."""
    for folder, count in (("good", 4), ("pit", 4)):
        (root / "cat" / "test" / folder).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (100, 40)).save(root / "cat" / "test" / folder / f"{i}.png")
    masks = root / "cat" / "ground_truth" / "pit"
    mask = np.full((40, 100), 255 if pit is None else 0, dtype=np.uint8)
    if pit is not None:
        mask[pit[0] : pit[0] + 2, pit[1] : pit[1] + 2] = 255
    for i in range(masked):
        masks.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(masks / f"{i}_mask.png")


def test_a_defect_smaller_than_a_model_pixel_still_counts_at_native_resolution(
    tmp_path: Path,
) -> None:
    _category(tmp_path, pit=(1, 1))
    items = test_images(tmp_path, "cat")
    maps = []
    for item in items:  # 4 x 10 model-size maps: the defective ones peak at the pit's cell
        amap = np.zeros((4, 10), dtype=np.float32)
        amap[0, 0] = item.label
        maps.append(amap)
    scores = [item.label for item in items]
    native = evaluate_maps(items, scores, maps, Protocol(image_size=(4, 10)))
    assert native["confirmation"]["pixel_auc"] > 0.95
    assert native["defects"]["pit"]["images"] == 2
    shrunk = Protocol(image_size=(4, 10), resolution="model", halves=False)
    # nearest shrinking samples the pixel at (5, 5) of each 10 x 10 cell: the pit is gone
    assert np.isnan(evaluate_maps(items, scores, maps, shrunk)["confirmation"]["pixel_auc"])


def test_without_halves_tuning_and_confirmation_are_all_images(tmp_path: Path) -> None:
    _category(tmp_path, pit=(10, 10))
    items = test_images(tmp_path, "cat")
    maps = [np.full((4, 10), item.label, dtype=np.float32) for item in items]
    scores = [0.1, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35, 0.45]
    found = evaluate_maps(items, scores, maps, Protocol(metrics=("img_auc",), halves=False))
    assert found["confirmation"]["img_auc"] == found["tuning"]["img_auc"] == 0.625
    assert found["images"] == {"good": 4, "defective": 4}
    fpr, tpr = found["roc"]
    assert fpr[0] == 0.0 and tpr[-1] == 1.0


def test_an_empty_tuning_half_gives_nan_not_an_error(tmp_path: Path) -> None:
    _category(tmp_path, pit=(10, 10))
    items = [i for i in test_images(tmp_path, "cat") if i.path.stem == "0"]  # one per kind
    maps = [np.full((4, 10), item.label, dtype=np.float32) for item in items]
    found = evaluate_maps(items, [0.0, 1.0], maps, Protocol(metrics=("img_auc", "aupro")))
    assert found["confirmation"]["img_auc"] == 1.0
    assert all(np.isnan(value) for value in found["tuning"].values())


def _random_maps(items: list, seed: int = 0) -> tuple[list[float], list[np.ndarray]]:
    """Image scores and 4 x 10 maps of no pattern: every figure depends on which images count."""
    rng = np.random.default_rng(seed)
    return rng.random(len(items)).tolist(), list(rng.random((len(items), 4, 10), dtype=np.float32))


def test_a_kind_with_some_masks_measures_pixels_on_those_and_says_which(tmp_path: Path) -> None:
    _category(tmp_path, pit=(10, 10), masked=2)
    items = test_images(tmp_path, "cat")
    scores, maps = _random_maps(items)
    protocol = Protocol(image_size=(4, 10), halves=False)
    found = evaluate_maps(items, scores, maps, protocol, threshold=0.5)
    known = [i for i, item in enumerate(items) if item.has_truth]
    alone = evaluate_maps(
        [items[i] for i in known],
        [scores[i] for i in known],
        [maps[i] for i in known],
        protocol,
        0.5,
    )
    pixels = ("pixel_auc", "aupro", "pixel_ap", "lit_defective", "lit_good")
    assert {k: found["confirmation"][k] for k in pixels} == {
        k: alone["confirmation"][k] for k in pixels
    }
    labels = [item.label for item in items]
    assert found["confirmation"]["img_auc"] == pytest.approx(roc_auc_score(labels, scores))
    note = (
        "pixel_auc, aupro, pixel_ap, lit_defective leave out the 2 of 4 defective images "
        "without a mask (pit/2, pit/3)"
    )
    assert found["notes"] == {"confirmation": note, "tuning": note, "defects": {"pit": note}}
    assert alone["notes"] == {"defects": {}}


def test_whole_image_masks_leave_lit_defective_empty_and_say_why(tmp_path: Path) -> None:
    _category(tmp_path, pit=None)
    items = test_images(tmp_path, "cat")
    scores, maps = _random_maps(items)
    protocol = Protocol(image_size=(4, 10), halves=False)
    found = evaluate_maps(items, scores, maps, protocol, threshold=0.5)
    assert np.isnan(found["confirmation"]["lit_defective"])
    assert 0 < found["confirmation"]["pixel_auc"] < 1
    assert found["notes"]["defects"]["pit"] == (
        "lit_defective is empty: every mask covers its whole image, leaving no defect-free "
        "pixel of a defective image to light"
    )
    # without a threshold lit_defective is empty for that reason: no word about the masks
    assert evaluate_maps(items, scores, maps, protocol)["notes"] == {"defects": {}}


@pytest.mark.parametrize(
    "good, defective, step", [(4, 4, 0.25), (3, 40, 1 / 3), (40, 20, 0.05), (0, 5, float("inf"))]
)
def test_one_image_moves_an_auroc_by_one_over_the_smaller_count(good, defective, step) -> None:
    assert one_image_step(good, defective) == pytest.approx(step)


def test_one_image_step_is_what_swapping_one_image_does() -> None:
    """Lifting the lowest defective score above every good one moves the AUROC by 1/3."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    before = roc_auc_score(labels, [0.5, 0.6, 0.7, 0.1, 0.8, 0.9])
    after = roc_auc_score(labels, [0.5, 0.6, 0.7, 1.0, 0.8, 0.9])
    assert after - before == pytest.approx(one_image_step(3, 3))


def test_evaluate_notes_a_half_too_small_to_tell_settings_apart() -> None:
    [note] = _small_half_note("my_part", good=3, defective=4)
    assert note.startswith("note: my_part's confirmation half holds 3 good and 4 defective")
    assert "move its image AUROC by 0.33" in note
    assert _small_half_note("washer", good=12, defective=18) == []


def _scored(root: Path, held_out: list[float]) -> None:
    """runs/cat/ as the score stage leaves it for data/images/cat: image scores their labels,
    good maps at 0.6 and defective ones at 1.0 everywhere, ``held_out`` the held-out good
    images' scores."""
    items = test_images(root / "data" / "images", "cat")
    keys = [f"test/{item.key}" for item in items]
    score = root / "runs" / "cat" / "score"
    score.mkdir(parents=True)
    (root / "runs" / "cat" / "recon").mkdir()
    (root / "runs" / "cat" / "recon" / "summary.json").write_text('{"nfe_per_image": 1.0}')
    cost = (
        '{"nfe_per_image": 0.0, "backbone_passes_per_image": 1.0, "denoiser_passes_per_image": 0.0}'
    )
    (root / "runs" / "cat" / "score" / "summary.json").write_text(cost)
    pd.DataFrame(
        {
            "key": keys + [f"validation/{i}" for i in range(len(held_out))],
            "split": ["test"] * len(keys) + ["validation"] * len(held_out),
            "score": [float(item.label) for item in items] + held_out,
        }
    ).to_csv(score / "scores.csv", index=False)
    maps = np.array([np.full((4, 10), 1.0 if item.label else 0.6) for item in items])
    np.savez_compressed(score / "maps.npz", keys=np.array(keys), maps=maps.astype(np.float32))


def _evaluated() -> None:
    data = {"categories": ["cat"], "category_types": {"cat": "object"}, "source": "folders"}
    evaluate.main({"data": data, "evaluate": {"metrics": list(METRIC_NAMES)}}, [])


@pytest.mark.parametrize("held_out, lit_good", [([0.2, 0.7], 0.0), ([0.2, 0.5], 1.0), ([], None)])
def test_evaluate_reports_the_lit_shares_at_the_detect_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_out: list[float], lit_good: float | None
) -> None:
    """Good maps at 0.6 and defective ones at 1.0 everywhere: the threshold, the higher of two
    held-out good scores (too few for the rate), decides whether the good images light; without
    held-out images both are null."""
    monkeypatch.chdir(tmp_path)
    _category(tmp_path / "data" / "images", pit=(10, 10))
    _scored(tmp_path, held_out)
    _evaluated()
    lit_defective = None if lit_good is None else 1.0
    expected = {"lit_defective": lit_defective, "lit_good": lit_good}
    report = json.loads(Path("metrics/metrics.json").read_text())
    for row in (report["mean"], report["categories"]["cat"], report["tuning"]["cat"]):
        assert {k: row[k] for k in expected} == expected
    for name in ("mean", "category/cat", "tuning/cat", "tuning/mean", "kind/cat/pit"):
        row = json.loads(Path(f"metrics/{name}.json").read_text())
        assert {k: row[k] for k in expected} == expected
    columns = list(pd.read_csv("metrics/results.csv").columns)
    assert columns[:4] == evaluate.SEED_COLUMNS and {"lit_defective", "lit_good"} <= set(columns)


def test_rejects_without_masks_report_image_figures_and_say_why_pixels_are_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rejects sorted by eye, no ground_truth folder: image AUROC and F1, empty pixel figures
    (blank in results.csv, null in the JSON) and one note, the same in every output."""
    monkeypatch.chdir(tmp_path)
    _category(tmp_path / "data" / "images", pit=(10, 10), masked=0)
    _scored(tmp_path, held_out=[0.2, 0.7])
    _evaluated()
    note = "no defective image has a mask, so pixel_auc, aupro, pixel_ap, lit_defective are empty"
    printed = capsys.readouterr().out
    assert f"note: cat: {note}\n" in printed and "note: cat/pit" not in printed  # said once
    empty = dict.fromkeys(DEFECT_PIXEL_METRICS)
    table = pd.read_csv("metrics/results.csv")
    assert list(table.columns)[-1] == "note" and table.at[0, "note"] == note
    assert table[list(empty)].isna().all(axis=None) and table.at[0, "img_auc"] == 1.0
    report = json.loads(Path("metrics/metrics.json").read_text())
    kinds = json.loads(Path("metrics/defects.json").read_text())["cat"]
    rows = [report["categories"]["cat"], report["tuning"]["cat"], kinds["pit"]]
    rows += [
        json.loads(Path(f"metrics/{n}.json").read_text()) for n in ("category/cat", "kind/cat/pit")
    ]
    for row in rows:
        assert {k: row[k] for k in empty} == empty and row["note"] == note
        assert row["img_auc"] == row["img_f1max"] == 1.0 and row["lit_good"] == 0.0
    for name in ("mean", "type/object", "tuning/mean"):
        mean = json.loads(Path(f"metrics/{name}.json").read_text())
        assert mean["note"] == f"{', '.join(empty)}: empty in every category"
        assert mean["img_auc"] == 1.0
    # `dvc metrics show` leaves a column of nulls out: the note stands in its place
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    subprocess.run([DVC, "init", "-q", "--no-scm"], check=True, env=env)
    shown = subprocess.run(
        [DVC, "metrics", "show", "metrics/mean.json"], env=env, capture_output=True, text=True
    ).stdout
    assert "note" in shown.splitlines()[0] and f"{', '.join(empty)}: empty" in shown


def test_evaluate_reports_the_verdict_rates_at_the_threshold_the_rate_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """199 good scores (held-out and k-fold) at a 1 % false-alarm rate give the second highest,
    0.85: one good test image of four lies above it, two defective ones of four at or below it;
    results.csv and metrics.json say so beside the threshold and its good scores' count."""
    monkeypatch.chdir(tmp_path)
    _category(tmp_path / "data" / "images", pit=(10, 10))
    _scored(tmp_path, held_out=[0.1] * 8)
    csv = Path("runs/cat/score/scores.csv")
    table = pd.read_csv(csv)
    test = table["split"] == "test"
    table.loc[test, "score"] = [0.1, 0.2, 0.3, 0.9, 0.4, 0.8, 1.0, 1.2]  # good 0-3, then pit 0-3
    folds = pd.DataFrame({"split": "good_fold", "score": [*np.linspace(0, 0.5, 189), 0.85, 0.95]})
    pd.concat([table, folds]).to_csv(csv, index=False)
    data = {"categories": ["cat"], "category_types": {}, "source": "folders"}
    wanted = ["img_auc", "false_alarm_rate", "miss_rate"]
    params = {"data": data, "evaluate": {"metrics": wanted, "halves": False}}
    evaluate.main(params | {"detect": {"false_alarm_rate": 0.01}}, [])
    row = pd.read_csv("metrics/results.csv").iloc[0]
    assert (row["threshold"], row["good_scores"]) == (0.85, 199)
    assert (row["false_alarm_rate"], row["miss_rate"]) == (0.25, 0.5)
    category = json.loads(Path("metrics/metrics.json").read_text())["categories"]["cat"]
    assert category["false_alarm_rate"] == 0.25 and category["threshold"] == 0.85
    assert json.loads(Path("metrics/kind/cat/pit.json").read_text())["miss_rate"] == 0.5
    assert "threshold of cat: 0.8500, the 2nd highest of 199 good images' scores" in (
        capsys.readouterr().out
    )
    evaluate.main(params | {"detect": {"false_alarm_rate": 0.1}}, [])
    row = pd.read_csv("metrics/results.csv").iloc[0]  # the 20th highest: 0.5 * 171 / 188
    assert row["threshold"] == pytest.approx(0.5 * 171 / 188) and row["miss_rate"] == 0.25


def test_good_parts_only_give_a_row_that_says_there_is_nothing_to_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No test images yet: every figure empty (null, a blank cell) beside one note, in every
    output, and no NaN anywhere, so `dvc metrics show` has nothing to surprise anyone with."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "images" / "cat" / "train" / "good").mkdir(parents=True)
    _scored(tmp_path, held_out=[0.2, 0.7])
    _evaluated()
    printed = capsys.readouterr().out
    assert f"note: cat: {evaluate.NOTHING_TO_MEASURE}\n" in printed
    assert "confirmation half holds" not in printed
    table = pd.read_csv("metrics/results.csv")
    assert table.at[0, "note"] == evaluate.NOTHING_TO_MEASURE
    assert table[list(METRIC_NAMES)].isna().all(axis=None)
    row = json.loads(Path("metrics/category/cat.json").read_text())
    assert row == dict.fromkeys(METRIC_NAMES) | {"passes": 2.0, "note": evaluate.NOTHING_TO_MEASURE}
    mean = json.loads(Path("metrics/mean.json").read_text())
    assert mean["note"] == f"{', '.join(METRIC_NAMES)}: empty in every category"
    written = [
        p.read_text() for p in [*Path("metrics").rglob("*.json"), *Path("plots").rglob("*.json")]
    ]
    assert not any("NaN" in text for text in written)
    assert json.loads(Path("plots/roc/cat.json").read_text()) == []
