"""Progress bars redraw freely on a terminal and sparingly in a log file."""

from __future__ import annotations

import io

from ddad.progress import LOG_INTERVAL_S, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_throttled_bar_that_still_shows_the_end() -> None:
    log = io.StringIO()
    with progress_bar(range(1000), stream=log, desc="train") as bar:
        assert bar.mininterval == bar.maxinterval == LOG_INTERVAL_S
        for _ in bar:
            pass
    lines = log.getvalue().replace("\r", "\n").split("\n")
    assert len([line for line in lines if line.strip()]) <= 3
    assert "1000/1000" in log.getvalue()


def test_a_terminal_keeps_tqdms_redraw_rate_and_explicit_options_win() -> None:
    assert progress_bar(range(3), stream=Terminal()).mininterval == 0.1
    assert progress_bar(range(3), stream=io.StringIO(), mininterval=1.0).mininterval == 1.0
