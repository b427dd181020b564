"""What every stage shares: the error wrapper and launcher, images read as params.yaml says,
and atomic JSON; the folders themselves are named in ddad.data.layout."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ddad.data.imageio import Size
from ddad.data.layout import TestImage
from ddad.data.preprocess import model_input, model_mask
from ddad.diffusion import distributed
from ddad.diffusion.engine import resolve_device
from ddad.errors import DdadError
from stages.params import load_params

RESUME_HINT = "finished per-image results are kept; `dvc repro` finishes the missing images"


def dist_launch(params: dict[str, Any]) -> distributed.Launch:
    """params.yaml's ``dist`` section; the node's rank comes from PET_NODE_RANK (torchrun's
    variable), as every node reads the same params.yaml."""
    return distributed.Launch(
        **params["dist"], node_rank=int(os.environ.get(distributed.NODE_RANK_ENV, "0"))
    )


def run_stage(
    main: Callable[[dict[str, Any], list[str]], None],
    sharded: bool = False,
    interrupted: Callable[[list[str]], str] | None = None,
) -> None:
    """Validate params, run ``main(params, argv)``; user errors become one line and exit 2.

    A ``sharded`` stage (train, reconstruct, score) with ``dist`` asking for several processes
    starts itself once per rank under torch's launcher (ddad.diffusion.distributed); a rank
    (started so, or by torchrun) joins the group. The other stages always run as one process.

    Ctrl-C, or a rank that fails, ends in one line: ``interrupted(argv)``, what the stage kept
    and how to go on, or by default that finished work is kept.
    """
    try:
        params = load_params()
        launch = dist_launch(params)
        if sharded and distributed.in_worker():
            with distributed.process_group(resolve_device(params["device"])):
                main(params, sys.argv[1:])
        elif sharded and launch.world_size > 1:
            module = sys.modules["__main__"].__spec__.name
            hint = partial(interrupted, sys.argv[1:]) if interrupted else RESUME_HINT
            distributed.launch(launch, module, sys.argv[1:], hint)
        else:
            main(params, sys.argv[1:])
    except DdadError as exc:
        if not distributed.report_failure(str(exc)):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if not (sharded and distributed.in_worker()):  # the launcher says it once for all ranks
            kept = "finished work is kept; run `dvc repro` to go on"
            print(
                f"interrupted: {interrupted(sys.argv[1:]) if interrupted else kept}",
                file=sys.stderr,
            )
        sys.exit(130)


def wall_time(stage: str, started: float, images: int) -> str:
    """One line of the seconds an image took since ``started`` (a ``time.perf_counter()``).

    Only printed: a wall time differs on every run, so keeping it in an output would make DVC
    record new hashes for the same results (`ddad bench` measures speed)."""
    seconds = (time.perf_counter() - started) / max(images, 1)
    return f"{stage}: {images} images, {seconds:.3g} s an image (wall time, not stored)"


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def model_channels(params: dict[str, Any], data_channels: int) -> int:
    """Channels the model sees: the data's, unless forced, and RGB for the OpenAI model."""
    wanted = params["data"]["channels"]
    if wanted != "auto":
        return int(wanted)
    if params["model"]["preset"] == "openai-256-uncond":
        return 3
    return data_channels


def sized(params: dict[str, Any], size: Size) -> dict[str, Any]:
    """params with ``size`` for data.image_size: the category's input size that train chose
    (``auto`` resolved), which every stage reads its images at."""
    return params | {"data": params["data"] | {"image_size": size}}


def load_model_input(path: Path, channels: int, params: dict[str, Any]) -> np.ndarray:
    """An image as the model sees it, with params.yaml's size, resize and normalization."""
    data = params["data"]
    return model_input(path, channels, data["image_size"], data["resize"], data["normalization"])


def load_test_mask(item: TestImage, params: dict[str, Any]) -> np.ndarray:
    """The ground truth at model size (all False for good images)."""
    return model_mask(item, params["data"]["image_size"], params["data"]["mask_resize"])
