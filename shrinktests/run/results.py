"""What each config produced in this run, gathered for the summary table and data files."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from shrinktests.run.engine import ZERO_TIMINGS, Timings
from shrinktests.run.variant import VariantStats


class ConfigCrashed(RuntimeError):
    """Building or running one config failed; only that config's tests fail."""


@dataclass
class ConfigRun:
    """What a config produced this run, for the summary table."""

    stats: VariantStats | None = None
    timings: Timings = ZERO_TIMINGS
    drift: dict[str, Any] = field(default_factory=dict)  # case id -> checks.Drift
    degeneration: dict[str, Any] = field(default_factory=dict)
    constraints: dict[tuple[str, int], bool] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None
    #: aggregate metric -> stats.Estimate, and the judged aggregate budgets (test_aggregate)
    aggregate: dict[str, Any] = field(default_factory=dict)
    judgements: list[Any] = field(default_factory=list)
    #: timings come from a cached generation (measured in an earlier run)
    cached_timings: bool = False
