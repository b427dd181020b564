"""Read params.yaml and check every value (``ddad.params``) before any stage does work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddad.errors import DdadError
from ddad.params import PARAMS_FILE, ParamsError, parse_params, validate


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml.

    A bad value stays in the file (``dvc exp run -S`` writes it there before any stage runs), so
    every later run fails on it too: the error says which key to fix and how to go back.
    """
    if not path.is_file():
        raise DdadError(f"{path}: not found; run from the repository root")
    try:
        return validate(parse_params(path.read_text(), path))
    except ParamsError as exc:
        raise DdadError(
            f"{exc}; {path} still holds it: fix {exc.key} there or run `git checkout {path}`"
        ) from None
