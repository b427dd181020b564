"""Read params.yaml and check every value (``ddad.params``) before any stage does work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ddad.errors import DdadError
from ddad.params import PARAMS_FILE, ParamsError, parse_params, validate

ELEMENT = re.compile(r"\[\d+\]$")  # a list element's index, as in train.t_range[0]


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml.

    A bad value stays in the file (``dvc exp run -S`` writes it there before any stage runs), so
    every later run fails on it too: the error names the one key to fix (``_fix_hint``), never a
    way back that would also throw away the user's other settings.
    """
    if not path.is_file():
        raise DdadError(f"{path}: not found; run from the repository root")
    try:
        return validate(parse_params(path.read_text(), path))
    except ParamsError as exc:
        raise DdadError(f"{exc}{_fix_hint(exc, path)}") from None


def _fix_hint(error: ParamsError, path: Path) -> str:
    """How to fix the value of the one key ``error`` names: in the file, or with ``dvc exp run
    -S`` (of a whole list, as -S cannot set one element); nothing for an unknown or missing key,
    whose message says what to do."""
    if not error.settable:
        return ""
    key = error.key
    return f"; fix {key} in {path}, or `dvc exp run -S {ELEMENT.sub('', key)}=<value>`"
