"""Read params.yaml and check every value (``ddad.params``) before any stage does work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddad.errors import DdadError
from ddad.params import PARAMS_FILE, parse_params, validate


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml."""
    if not path.is_file():
        raise DdadError(f"{path}: not found; run from the repository root")
    return validate(parse_params(path.read_text(), path))
