"""Progress bars that suit where the output goes.

On a terminal a bar redraws several times a second. In a log file (CI, `dvc repro 2> log`)
every redraw is one more line, so a training run would write thousands of them; there a bar
redraws at most every ``LOG_INTERVAL_S`` seconds and once more when it closes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(
    iterable: Iterable[Any] | None = None, *, stream: TextIO | None = None, **options: Any
) -> tqdm:
    """A tqdm bar on ``stream`` (stderr), throttled when that is not a terminal.

    ``options`` are tqdm's; an explicit ``mininterval`` wins.
    """
    stream = stream or sys.stderr
    if not stream.isatty():
        options.setdefault("mininterval", LOG_INTERVAL_S)
        # tqdm's monitor thread would otherwise force a redraw every 10 s.
        options.setdefault("maxinterval", options["mininterval"])
    return tqdm(iterable, file=stream, **options)
