"""Read params.yaml and check every value (``ddad.params``) before any stage does work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ddad.errors import DdadError
from ddad.params import PARAMS_FILE, validate


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml."""
    if not path.is_file():
        raise DdadError(f"{path}: not found; run from the repository root")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise DdadError(
            f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    return validate(params or {})
