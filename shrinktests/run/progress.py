"""Where a long run is, and where its time went.

A cold run spends a minute or more inside one test while a config loads, compresses and
generates. The session reports what it is doing through :class:`Progress` (a no-op unless the
caller attaches one: the pytest plugin shows a status line, the CLI prints lines) and adds the
seconds of each phase to a :class:`PhaseClock`, printed as the run's time breakdown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Phase = Literal["load", "compress", "generate", "teacher-forced", "checks", "atlas"]
PHASES: tuple[Phase, ...] = ("load", "compress", "generate", "teacher-forced", "checks", "atlas")


class Progress:
    """Receives what the run is doing; this base class shows nothing."""

    def status(self, text: str) -> None:
        """A transient status ("nf4: generating constraints, step 40/128, 12 rows left")."""

    def clear(self) -> None:
        """The step is over: remove the status."""


class PhaseClock:
    """Seconds spent per phase of the run (the time inside a phase, not the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._open: Phase | None = None

    @contextmanager
    def __call__(self, phase: Phase) -> Iterator[None]:
        if self._open is not None:  # nested: the outer phase keeps counting
            yield
            return
        self._open = phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self._open = None

    def add(self, phase: Phase, seconds: float) -> None:
        self.seconds[phase] += seconds


def describe_breakdown(seconds: dict[str, float], wall: float | None) -> str:
    """One line: ``time: load 3 s · compress 20 s · generate 300 s … (wall 640 s)``."""
    parts = [f"{phase} {s:.0f} s" for phase, s in seconds.items() if s >= 0.5]
    if not parts:
        return ""
    total = sum(seconds.values())
    tail = ""
    if wall is not None and wall > 0:
        tail = f" (in these phases {total:.0f} s of {wall:.0f} s wall)"
    return "time: " + " · ".join(parts) + tail
