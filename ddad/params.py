"""The params.yaml schema: every knob the pipeline knows, with its type, range or choices.

The pipeline checks the whole tree before any stage does work (``validate``); ``ddad detect``
and ``ddad bench`` read single keys, possibly outside a project, with the same rules
(``setting``). Either way a bad value is one line naming the key, the value and what is allowed.

Each settings object is built from params here, by one function (``score_settings``,
``plan_from``, ``train_config``, ``protocol_from``, ``detect_settings``, and a category's
``input_size``); a key that is absent, as outside a project, takes the dataclass's default, the
one place defaults live (the shipped params.yaml holds the same values, which a test pins).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import yaml

from ddad.data.imageio import MASK_RESIZE_METHODS, RESIZE_METHODS, Size, sides
from ddad.data.layout import (
    DATA_DIR,
    METRICS_DIR,
    PLOTS_DIR,
    RUNS_DIR,
    TRAINED_DIR,
    dataset_size,
)
from ddad.data.mvtec import MVTEC_CATEGORIES
from ddad.data.preprocess import NORMALIZATIONS
from ddad.data.synthetic import SYNTHETIC_CATEGORIES
from ddad.diffusion.engine import DEVICES
from ddad.diffusion.feature_denoiser import GROUPS
from ddad.diffusion.models import PRESETS, downsampling, size_needs
from ddad.diffusion.reconstruct import SAMPLERS, Plan, highest_timestep
from ddad.diffusion.train import FLIPS, TrainConfig
from ddad.errors import DdadError
from ddad.evaluation.metrics import METRIC_NAMES
from ddad.evaluation.protocol import RESOLUTIONS, Protocol
from ddad.maps.backbone import BACKBONES, GRANULE, IMAGENET_SIDE, SIDES, SMALLEST, STRIDES, fits
from ddad.maps.denoiser import DenoiserSettings
from ddad.maps.kinds import KINDS
from ddad.maps.kinds.fused import FUSABLE, FUSIONS, fusable
from ddad.maps.scoring import ERRORS, IMAGE_SCORES, ScoreSettings
from ddad.maps.search import FEATURE_MODELS
from ddad.maps.sources import SOURCES, reads_unet
from ddad.maps.threshold import DetectSettings

PARAMS_FILE = Path("params.yaml")
AUTO = "auto"
CATEGORY_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # category names become folder names under runs/
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# what the pipeline's stages write (dvc.yaml's outputs), relative to the repository root
PIPELINE_OUTPUTS = tuple(
    PurePosixPath(p) for p in (DATA_DIR, TRAINED_DIR.parent, RUNS_DIR, METRICS_DIR, PLOTS_DIR)
)
ENDPOINT = re.compile(r"[^\s:]+:[0-9]{1,5}")


@dataclass(frozen=True)
class Spec:
    """What one key accepts: a kind, optional bounds or choices, and element specs."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: Collection[str] = ()  # a live view (the map kinds' registry) stays up to date
    item: Spec | None = None
    size: int | None = None
    odd: bool = False  # besides 0, only odd values (a blur kernel has a centre)
    auto: bool = False  # "auto" is accepted too
    above: bool = False  # low itself is not allowed (a learning rate of 0 learns nothing)

    def describe(self) -> str:
        if self.auto:
            return f"auto or {replace(self, auto=False).describe()}"
        if self.odd:
            return "0 (auto) or an odd size"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        bounds = ""
        if self.low is not None and self.high is not None:
            bounds = f" in {self.low:g}..{self.high:g}" + (f" (not {self.low:g})" * self.above)
        elif self.low is not None:
            bounds = f" {'>' if self.above else '>='} {self.low:g}"
        if self.kind == "list":
            count = f"{self.size} " if self.size else ""
            return f"a list of {count}({self.item.describe()})"
        if self.kind == "map":
            return f"a mapping of category -> ({self.item.describe()})"
        if self.kind == "size":
            return f"a side{bounds} (square) or [height, width], each{bounds}"
        return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            self.kind, "a string"
        ) + bounds


def _choice(*options: str) -> Spec:
    return Spec("str", choices=options)


INT_T = Spec("int", 0, 999)
SCHEMA: dict[str, Any] = {
    "data": {
        "source": _choice("synthetic", "mvtec", "folder"),
        "root": Spec("str"),
        "categories": Spec("list", item=Spec("str"), low=1),
        "image_size": Spec("size", 8, 4096, auto=True),
        "resize": _choice(*RESIZE_METHODS),
        "mask_resize": _choice(*MASK_RESIZE_METHODS),
        "normalization": _choice(*NORMALIZATIONS),
        "channels": _choice("auto", "1", "3"),
        "category_types": Spec("map", item=_choice("object", "texture")),
        "mvtec_url": Spec("str"),
        "mvtec_sha256": Spec("str"),
        "synthetic": {
            "seed": Spec("int", 0),
            "train": Spec("int", 2),
            "test_good": Spec("int", 1),
            "test_defect": Spec("int", 1),
        },
    },
    "model": {"preset": _choice(*PRESETS), "sha256": Spec("str")},
    "train": {
        "steps": Spec("int", 0),
        "batch_size": Spec("int", 1),
        "lr": Spec("float", 0, above=True),
        "ema": Spec("float", 0, 1),
        "t_range": Spec("list", item=INT_T, size=2),
        "crop": Spec("int", 0),
        "flips": Spec("list", item=_choice(*FLIPS)),
        "val_images": Spec("int", 1),
        "seed": Spec("int", 0),
    },
    "reconstruct": {
        "timesteps": Spec("int", 1, 999),
        "timesteps_per_category": Spec("map", item=Spec("int", 1, 999)),
        "jitter": Spec("float", 0, 0.5),
        "off_by_one": Spec("bool"),
        "sampler": _choice(*SAMPLERS),
        "steps": Spec("int", 1, 999),
        "ensemble": Spec("int", 1),
        "conditioning": Spec("float", 0, 1),
        "batch_size": Spec("int", 1, auto=True),
        "seed": Spec("int", 0),
    },
    "score": {
        "sigma": Spec("float", 0),
        "kernel_size": Spec("int", 0, odd=True),
        "error": _choice(*ERRORS),
        "image_score": _choice(*IMAGE_SCORES),
        "top_fraction": Spec("float", 0, 1),
        "map": Spec("str", choices=KINDS.keys()),
        "backbone": _choice(*SOURCES),
        "backbone_size": Spec("size", 32, 4096, auto=True),
        "backbone_pooling": Spec("int", 1, 9),
        "backbone_strides": Spec("list", item=_choice(*(str(s) for s in STRIDES)), low=1),
        "feature_weight": Spec("float", 0),
        "bank_images": Spec("int", 1),
        "bank_vectors": Spec("int", 2),  # whitening needs two to have a spread
        "coreset": Spec("float", 0, 1, above=True),
        "reference_images": Spec("int", 0),
        "search_radius": Spec("int", -1),
        "whiten": Spec("bool"),
        "feature_model": _choice(*FEATURE_MODELS),
        "closing": Spec("int", 0),
        "divide_map": Spec("bool"),
        "inversion_steps": Spec("int", 1, 999),
        "feature_t": Spec("int", 1, 999),
        "feature_steps": Spec("int", 1, 999),
        "feature_conditioning": Spec("float", 0, 1),
        "fused_maps": Spec("list", item=Spec("str", choices=KINDS.keys()), low=1),
        "fusion": _choice(*FUSIONS),
    },
    "denoiser": {
        "steps": Spec("int", 1),
        "batch_size": Spec("int", 1),
        "lr": Spec("float", 0, above=True),
        "ema": Spec("float", 0, 1),
        "crop": Spec("int", 0),
        "width": Spec("int", GROUPS),
        "blocks": Spec("int", 1),
        "seed": Spec("int", 0),
    },
    "evaluate": {
        "metrics": Spec("list", item=_choice(*METRIC_NAMES), low=1),
        "resolution": _choice(*RESOLUTIONS),
        "halves": Spec("bool"),
        "split_seed": Spec("int", 0),
    },
    "detect": {
        "false_alarm_rate": Spec("float", 0, 0.5, above=True),
        "folds": Spec("int", 0, 100),
    },
    "plot": {"overlays_per_category": Spec("int", 0)},
    "device": _choice(*DEVICES),
    "dist": {
        "nproc_per_node": Spec("int", 1),
        "nnodes": Spec("int", 1),
        "rdzv_endpoint": Spec("str"),
        "timeout_s": Spec("int", 1),
    },
}


SOURCE_CATEGORIES = {"synthetic": SYNTHETIC_CATEGORIES, "mvtec": MVTEC_CATEGORIES}


class ParamsError(DdadError):
    """A bad params.yaml value; ``key`` is the dotted key to fix, ``settable`` False when it is
    an unknown or missing key (the message says what to do; ``dvc exp run -S`` cannot)."""

    def __init__(self, key: str, message: str, settable: bool = True) -> None:
        super().__init__(message)
        self.key = key
        self.settable = settable


def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(key, f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _check_value(key: str, value: Any, spec: Spec) -> None:
    if spec.kind == "list":
        if not isinstance(value, list):
            raise _fail(key, value, spec.describe())
        if spec.size is not None and len(value) != spec.size:
            raise _fail(key, value, spec.describe())
        if spec.low is not None and len(value) < spec.low:
            raise _fail(key, value, "a non-empty list")
        for i, element in enumerate(value):
            _check_value(f"{key}[{i}]", element, spec.item)
        return
    if spec.kind == "map":
        if not isinstance(value, dict):
            raise _fail(key, value, spec.describe())
        for name, element in value.items():
            _check_value(f"{key}.{name}", element, spec.item)
        return
    if spec.auto and value == "auto":
        return
    if spec.kind == "size":
        side = replace(spec, kind="int", auto=False)
        if isinstance(value, list) and len(value) == 2:
            for i, element in enumerate(value):
                _check_value(f"{key}[{i}]", element, side)
            return
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or not spec.low <= value <= spec.high:
            raise _fail(key, value, spec.describe())
        return
    if spec.choices:
        if str(value) not in spec.choices or isinstance(value, (bool, list, dict)):
            raise _fail(key, value, spec.describe())
        return
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[spec.kind]
    if not isinstance(value, expected) or (spec.kind != "bool" and isinstance(value, bool)):
        raise _fail(key, value, spec.describe())
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(key, value, spec.describe())
    below = spec.low is not None and (value < spec.low or spec.above and value == spec.low)
    if below or spec.high is not None and value > spec.high:
        raise _fail(key, value, spec.describe())
    if spec.odd and value and value % 2 == 0:
        raise _fail(key, value, spec.describe())


def _check_tree(prefix: str, values: Any, schema: dict[str, Any]) -> None:
    if not isinstance(values, dict):
        raise _fail(prefix, values, f"a mapping with keys {', '.join(schema)}")
    for key in values:
        if key not in schema:
            where = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(schema)}"
            raise ParamsError(where, f"params.yaml: unknown key {where!r}{hint}", False)
    for key, spec in schema.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in values:
            raise ParamsError(
                where, f"params.yaml: {where} is missing; add it (see README, 'The knobs')", False
            )
        if isinstance(spec, dict):
            _check_tree(where, values[key], spec)
        else:
            _check_value(where, values[key], spec)


def parse_params(text: str, source: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml's text as a dict of sections (empty text: none).

    The one reader behind the pipeline (which then validates the tree) and the CLI (which reads
    single keys): a YAML slip names the file and line, a non-mapping says what is expected.
    """
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        reason = " ".join(str(getattr(exc, "problem", exc)).split())
        raise DdadError(f"{source}:{where} is not valid YAML ({reason}); fix that line") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DdadError(
            f"{source}: expected a mapping of sections (data:, model:, ...); "
            "see the project's params.yaml"
        )
    return loaded


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """Check the whole params tree (types, ranges, choices, cross-key rules); return it.

    Every rule a stage would refuse a value by is here too (often the very function the stage
    calls), since this check runs before DVC deletes any stage's outputs.
    """
    _check_tree("", params, SCHEMA)
    _check_reconstruct(params["reconstruct"])
    _check_data(params["data"])
    _check_model(params)
    _check_train(params)
    _check_score(params["score"])
    _check_denoiser(params["denoiser"])
    _check_folds(params["detect"]["folds"])
    _check_dist(params)
    return params


def _check_reconstruct(rec: dict[str, Any]) -> None:
    """ddim's steps and the jittered noise levels against every category's t."""
    levels = {"reconstruct.timesteps": rec["timesteps"]}
    levels.update(
        {
            f"reconstruct.timesteps_per_category.{c}": t
            for c, t in rec["timesteps_per_category"].items()
        }
    )
    for key, t in levels.items():
        if rec["sampler"] == "ddim" and rec["steps"] > t + 1:
            raise _fail("reconstruct.steps", rec["steps"], f"1..{t + 1} (steps from {key} = {t})")
        if highest_timestep(t, rec["jitter"]) > 999:
            raise _fail(
                "reconstruct.jitter", rec["jitter"], f"a jitter that keeps {key} below 1000"
            )


def _check_data(data: dict[str, Any]) -> None:
    """Category names that make folders, and that the source has; the archive pin; a root
    for your own folders."""
    for name in data["categories"]:
        if not CATEGORY_NAME.fullmatch(name) or set(name) == {"."}:
            raise _fail("data.categories", name, "a plain folder name (letters, digits, _ . -)")
    if len(set(data["categories"])) != len(data["categories"]):
        raise _fail("data.categories", data["categories"], "distinct names")
    known = SOURCE_CATEGORIES.get(data["source"])
    for name in data["categories"]:
        if known is not None and name not in known:
            raise _fail(
                "data.categories",
                name,
                f"a {data['source']} category ({', '.join(known)}), as data.source is "
                f"{data['source']}; your own images need data.source folder",
            )
    _check_root(data["root"])
    _check_pin("data.mvtec_sha256", data["mvtec_sha256"])


def _check_root(root: str) -> None:
    """Your own images' folder: every fetch_data stage depends on it, whatever the source, and
    it must not hold or lie in what the pipeline writes, which DVC may delete."""
    allowed = "a folder apart from data/images, models, runs, metrics and plots (data/own)"
    if not root:
        raise _fail("data.root", root, allowed)
    path = PurePosixPath(os.path.normpath(root))
    for written in PIPELINE_OUTPUTS:
        if path == written or written in path.parents or path in written.parents:
            raise _fail("data.root", root, allowed)


def _check_pin(key: str, pin: str) -> None:
    """A download's pinned checksum: a typo would fail only after the whole download."""
    if pin and not SHA256.fullmatch(pin):
        raise _fail(key, pin, "'' or a sha256 (64 hex digits)")


def _check_model(params: dict[str, Any]) -> None:
    """The preset's size rule (ddad.diffusion.models.size_needs, which train's check_preset
    applies), the channels its pretrained weights have and their pin."""
    name, data = params["model"]["preset"], params["data"]
    needs = data["image_size"] != AUTO and size_needs(name, data["image_size"])
    if needs:
        raise _fail("data.image_size", data["image_size"], f"{needs} for model.preset {name}")
    if PRESETS[name].pretrained and data["channels"] == "1":
        raise _fail("data.channels", "1", f"auto or 3 (model.preset {name}'s weights are RGB)")
    _check_pin("model.sha256", params["model"]["sha256"])


def _check_train(params: dict[str, Any]) -> None:
    """The noise-level range and crops the preset's UNet can take (with ``auto``, whose size is
    not known yet, no crop it cannot)."""
    low, high = params["train"]["t_range"]
    if low > high:
        raise _fail("train.t_range", [low, high], "[low, high] with low <= high")
    name, crop = params["model"]["preset"], params["train"]["crop"]
    size = params["data"]["image_size"]
    levels = downsampling(name)
    if crop % levels and (size == AUTO or crop < min(sides(size))):
        raise _fail(
            "train.crop", crop, f"0 (whole images) or a multiple of {levels} (model.preset {name})"
        )


def _check_score(score: dict[str, Any]) -> None:
    """A per-position Gaussian needs two bank images to have a spread; a pretrained backbone
    sees sides that its deepest stride used divides (ddad.maps.backbone)."""
    if score["feature_model"] == "gaussian" and score["bank_images"] < 2:
        raise _fail(
            "score.bank_images", score["bank_images"], "at least 2 (feature_model gaussian)"
        )
    size = score["backbone_size"]
    if size != "auto" and not all(fits(side) for side in sides(size)):
        raise _fail("score.backbone_size", size, f"auto or {SIDES}")
    strides = score["backbone_strides"]
    if len(set(strides)) != len(strides) or not all(isinstance(s, int) for s in strides):
        raise _fail("score.backbone_strides", strides, f"distinct numbers of {list(STRIDES)}")
    if score["backbone_pooling"] % 2 == 0:  # an even window has no centre cell
        raise _fail("score.backbone_pooling", score["backbone_pooling"], "an odd number in 1..9")
    _check_fusion(score)


def _check_fusion(score: dict[str, Any]) -> None:
    """A fused map fuses kinds that read the input alone, no step of a feature reconstruction
    lies below t = 0, and the feature denoiser reads a pretrained backbone's features."""
    for name in score["fused_maps"]:
        if not fusable(name):
            raise _fail("score.fused_maps", score["fused_maps"], f"kinds of {', '.join(FUSABLE)}")
    settings = score_settings({"score": score})
    if KINDS[score["map"]].needs_denoiser(settings) and reads_unet(settings):
        raise _fail(
            "score.backbone",
            score["backbone"],
            f"a pretrained backbone ({', '.join(BACKBONES)}): "
            f"the feature denoiser of score.map {score['map']} reads its features",
        )
    if score["feature_steps"] > score["feature_t"] + 1:
        raise _fail("score.feature_steps", score["feature_steps"], f"1..{score['feature_t'] + 1}")


def _check_denoiser(denoiser: dict[str, Any]) -> None:
    """Group normalisation splits the width into equal groups."""
    if denoiser["width"] % GROUPS:
        raise _fail("denoiser.width", denoiser["width"], f"a multiple of {GROUPS}")


def _check_folds(folds: int) -> None:
    """One fold would score the training images against a reference built from none."""
    if folds == 1:
        raise _fail("detect.folds", folds, "0 (the held-out images alone) or 2..100")


def _check_dist(params: dict[str, Any]) -> None:
    """Node 0's address when there are several nodes; a batch every process has a share of."""
    dist = params["dist"]
    if dist["nnodes"] > 1 and not ENDPOINT.fullmatch(dist["rdzv_endpoint"]):
        raise _fail(
            "dist.rdzv_endpoint",
            dist["rdzv_endpoint"],
            f"host:port of node 0 (dist.nnodes = {dist['nnodes']})",
        )
    processes = dist["nproc_per_node"] * dist["nnodes"]
    if params["train"]["batch_size"] < processes:
        raise _fail(
            "train.batch_size",
            params["train"]["batch_size"],
            f"at least the {processes} processes of dist (each takes a share of the batch)",
        )


def setting(params: dict[str, Any], key: str, default: Any) -> Any:
    """The value at dotted ``key`` of a params tree, checked against the schema; ``default``
    when the key (or a section above it) is absent."""
    node: Any = params
    spec: Any = SCHEMA
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
        spec = spec[part] if isinstance(spec, dict) else spec.item
    _check_value(key, node, spec)
    return node


class InputSize(NamedTuple):
    """A category's model input size, and where it came from in words (train's log says it)."""

    size: Size
    source: str


def input_size(params: dict[str, Any], root: Path, category: str) -> InputSize:
    """The model input of ``category`` (its folder under ``root``): ``data.image_size`` as set or,
    for ``auto``, the preset's own size, else the size its training photographs ask for (most of
    them, ``_photograph_size``). train chooses it and records it in meta.json, which the later
    stages and ``ddad detect`` read, so that all see the images alike."""
    size = setting(params, "data.image_size", AUTO)
    if size != AUTO:
        return InputSize(size, "data.image_size")
    preset = setting(params, "model.preset", "tiny")
    if PRESETS[preset].image_size:
        return InputSize(PRESETS[preset].image_size, f"data.image_size auto: {preset}'s size")
    height, width = dataset_size(root, category)
    chosen = _photograph_size(height, width, math.lcm(GRANULE, downsampling(preset)))
    source = (
        f"data.image_size auto: the training photographs' {height} x {width}, shape kept, "
        f"shorter side at most {IMAGENET_SIDE}"
    )
    return InputSize(chosen[0] if chosen[0] == chosen[1] else list(chosen), source)


def _photograph_size(height: int, width: int, granule: int) -> tuple[int, int]:
    """A photograph's model input under ``auto``: its shape kept, its shorter side brought down
    to ImageNet's 224 pixels, the scale the pretrained backbone sees well, or up to the 32 it
    needs (between the two a photograph keeps its size: 64 stays 64, as the synthetic set is
    made), each side rounded to a multiple of ``granule``, what the UNet and the backbone take."""
    shorter = min(height, width)
    scale = min(max(shorter, SMALLEST), IMAGENET_SIDE) / shorter
    return tuple(granule * round(side * scale / granule) for side in (height, width))


def protocol_from(params: dict[str, Any]) -> Protocol:
    """The protocol params.yaml sets (its ``evaluate`` section, ``data.image_size`` and
    ``data.mask_resize``); a key that is absent, as outside a project, keeps its default."""
    default = Protocol()
    return Protocol(
        metrics=tuple(setting(params, "evaluate.metrics", list(default.metrics))),
        resolution=setting(params, "evaluate.resolution", default.resolution),
        halves=setting(params, "evaluate.halves", default.halves),
        split_seed=setting(params, "evaluate.split_seed", default.split_seed),
        image_size=setting(params, "data.image_size", default.image_size),
        mask_resize=setting(params, "data.mask_resize", default.mask_resize),
    )


def _fields(params: dict[str, Any], section: str, defaults: Any) -> dict[str, Any]:
    """Each field of dataclass instance ``defaults`` from params' ``section`` (checked like the
    pipeline), else its default; lists become tuples, as the dataclasses hold them."""
    values = {}
    for name in defaults.__dataclass_fields__:
        value = setting(params, f"{section}.{name}", getattr(defaults, name))
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def score_settings(params: dict[str, Any]) -> ScoreSettings:
    """How maps and image scores are made: params' ``score`` section over the defaults."""
    return ScoreSettings(**_fields(params, "score", ScoreSettings()))


def detect_settings(params: dict[str, Any]) -> DetectSettings:
    """How the detect threshold is chosen: params' ``detect`` section over the defaults."""
    return DetectSettings(**_fields(params, "detect", DetectSettings()))


def denoiser_settings(params: dict[str, Any]) -> DenoiserSettings:
    """The feature denoiser's size and training: params' ``denoiser`` section over the defaults."""
    return DenoiserSettings(**_fields(params, "denoiser", DenoiserSettings()))


def train_config(params: dict[str, Any]) -> TrainConfig:
    """One training run's knobs: params' ``train`` section over the defaults."""
    return TrainConfig(**_fields(params, "train", TrainConfig()))


def plan_from(
    params: dict[str, Any], category: str | None = None, overrides: dict[str, Any] | None = None
) -> Plan:
    """The reconstruction plan: ``overrides`` (flags) first, then params' ``reconstruct``
    section (the category's own ``timesteps_per_category`` entry before ``timesteps``), then
    the defaults. A jitter that takes t past 999 is one line."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = _fields(params, "reconstruct", Plan()) | given
    if category and "timesteps" not in given:
        key = f"reconstruct.timesteps_per_category.{category}"
        values["timesteps"] = setting(params, key, values["timesteps"])
    plan = Plan(**values)
    if highest_timestep(plan.timesteps, plan.jitter) > 999:
        raise DdadError(
            f"reconstruct.jitter {plan.jitter:g} takes t={plan.timesteps} past 999; "
            "lower the jitter or the timesteps"
        )
    return plan
