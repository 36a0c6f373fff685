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
    """Seconds spent per phase of the run (the time inside a phase, not the wall time), in
    all and per config: a cold run's time is mostly a few configs' compression or kernels,
    and the breakdown names them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        #: config name -> phase -> seconds (phases that belong to no config, like the
        #: atlas, are only in :attr:`seconds`)
        self.by_config: dict[str, dict[str, float]] = {}
        self._open: Phase | None = None

    @contextmanager
    def __call__(self, phase: Phase, config: str | None = None) -> Iterator[None]:
        if self._open is not None:  # nested: the outer phase keeps counting
            yield
            return
        self._open = phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start, config)
            self._open = None

    def add(self, phase: Phase, seconds: float, config: str | None = None) -> None:
        self.seconds[phase] += seconds
        if config is not None:
            own = self.by_config.setdefault(config, {})
            own[phase] = own.get(phase, 0.0) + seconds


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


def describe_slowest(by_config: dict[str, dict[str, float]], most: int = 3) -> str:
    """One line naming the configs that took longest, with their phases:
    ``slowest configs: gptq-4bit 150 s (compress 101 · generate 30 · teacher-forced 19), …``."""
    totals = sorted(((sum(p.values()), name) for name, p in by_config.items()), reverse=True)
    shown = []
    for total, name in totals[:most]:
        if total < 0.5:
            break
        phases = " · ".join(f"{phase} {s:.0f}" for phase, s in by_config[name].items()
                            if s >= 0.5)
        shown.append(f"{name} {total:.0f} s ({phases})")
    return "slowest configs: " + ", ".join(shown) if shown else ""
