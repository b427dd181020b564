"""Replace a folder as a whole: readers see the old one or the new one, never a mix."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def replace_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Have ``write`` create the new folder at a hidden path beside ``target``, then swap it in.

    ``write`` gets a path that does not exist yet. A failure (or a kill) leaves ``target`` as it
    was; the hidden leftovers of a killed run are removed by the next call.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(stale)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging / target.name)
        if target.exists():
            os.replace(target, staging / ".retired")
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging)
