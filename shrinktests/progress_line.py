"""The progress of a running test on pytest's terminal, without breaking pytest's output.

On a terminal the status is written after pytest's own progress characters and erased again
(backspaces, never a carriage return, so the line of dots survives), cut to the terminal's
width. When the output is not a terminal (CI logs) it is written as plain lines, at most one
every few seconds per config and step, so a log shows which config was being built and how
far its generation got.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from shrinktests.run.progress import Progress

#: plain-line mode: the shortest gap between two lines about the same thing
_PLAIN_EVERY = 10.0


class TerminalProgress(Progress):
    def __init__(self, reporter: Any, capture: Any) -> None:
        self.reporter = reporter
        self.capture = capture
        tw = reporter._tw
        self.live = bool(getattr(tw, "hasmarkup", False))
        self._shown = 0
        self._last_topic = ""
        self._last_plain = 0.0

    def _write(self, text: str) -> None:
        # straight to pytest's output file: the writer's own idea of the current line's
        # width then stays pytest's, which is what the status is cut to
        with self.capture.global_and_fixture_disabled():
            out = self.reporter._tw._file
            out.write(text)
            out.flush()

    def status(self, text: str) -> None:
        if self.live:
            tw = self.reporter._tw
            room = tw.fullwidth - tw.width_of_current_line - 2
            shown = f" [{text}]"[:max(room, 0)]
            self._write(self._erase() + shown)
            self._shown = len(shown)
            return
        topic = text.split(",")[0]
        now = time.monotonic()
        if topic != self._last_topic or now - self._last_plain >= _PLAIN_EVERY:
            self._last_topic, self._last_plain = topic, now
            self.reporter.ensure_newline()
            with self.capture.global_and_fixture_disabled():
                self.reporter.write_line(f"[shrinktests] {text}")

    def _erase(self) -> str:
        n, self._shown = self._shown, 0
        return "\b" * n + " " * n + "\b" * n if n else ""

    def clear(self) -> None:
        if self.live and self._shown:
            self._write(self._erase())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Erase the status before pytest writes the test's outcome."""
        self.clear()
