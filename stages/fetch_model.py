"""fetch_model: the diffusion model's starting weights under models/pretrained/.

openai-256-uncond downloads OpenAI's checkpoint (or takes one already in models/, also under
the seed README's misspelt name); small presets start from random weights made in train.
Partial downloads live in models/downloads/, outside the stage's output, so that DVC's clean-up
before a re-run does not throw away what an interrupted transfer already fetched.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ddad.data.download import download
from ddad.data.layout import PRETRAINED_DIR
from ddad.diffusion.models import (
    OPENAI_256_FILE,
    OPENAI_256_URL,
    PRESETS,
    build_model,
    find_openai_checkpoint,
    load_weights,
    read_checkpoint,
)
from stages.common import run_stage, write_json

DOWNLOADS_DIR = PRETRAINED_DIR.parent / "downloads"


def main(params: dict[str, Any], argv: list[str]) -> None:
    preset = params["model"]["preset"]
    shutil.rmtree(PRETRAINED_DIR, ignore_errors=True)
    PRETRAINED_DIR.mkdir(parents=True)
    if not PRESETS[preset].pretrained:
        write_json(PRETRAINED_DIR / "preset.json", {"preset": preset, "weights": None})
        print(f"fetch_model: {preset} starts from random weights; nothing to download")
        return
    existing = find_openai_checkpoint(PRETRAINED_DIR.parent)
    source = existing or DOWNLOADS_DIR / OPENAI_256_FILE
    download(
        OPENAI_256_URL,
        source,
        sha256=params["model"]["sha256"] or None,
        hint=f"download it by hand and put it at models/{OPENAI_256_FILE}",
    )
    target = PRETRAINED_DIR / OPENAI_256_FILE
    os.link(source, target)
    print(f"fetch_model: {target} from {source}")
    load_weights(build_model(preset, 3, 256), read_checkpoint(target), target)
    write_json(PRETRAINED_DIR / "preset.json", {"preset": preset, "weights": OPENAI_256_FILE})


if __name__ == "__main__":
    run_stage(main)
