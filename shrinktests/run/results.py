"""What each config produced in this run, gathered for the summary table and data files."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from shrinktests.run.engine import ZERO_TIMINGS, Timings
from shrinktests.run.variant import VariantStats

if TYPE_CHECKING:
    from shrinktests.judging.aggregate import Judgement
    from shrinktests.judging.checks import Degeneration, Drift
    from shrinktests.judging.stats import Estimate


class Throughput(TypedDict):
    """One config's throughput benchmark: pytest-benchmark's ``extra_info`` (plain JSON, so
    it also travels from xdist workers) and a row of the summary's throughput table."""

    config: str
    reference: str
    prompt_eval_tps: float
    generate_tps: float
    #: generate_tps over the reference's, when the reference was benchmarked first
    vs_reference: float | None
    load_compress_seconds: float
    peak_rss_mb: float
    #: what the peak covers ("this config", or the whole process when models share it)
    peak_rss_scope: str
    model_mb: float
    bits_per_weight: float


class ConfigCrashed(RuntimeError):
    """Building or running one config failed; only that config's tests fail."""


@dataclass
class ConfigRun:
    """What a config produced this run, for the summary table."""

    stats: VariantStats | None = None
    timings: Timings = ZERO_TIMINGS
    #: case id -> its drift and degeneration checks (test_drift, test_degeneration)
    drift: dict[str, Drift] = field(default_factory=dict)
    degeneration: dict[str, Degeneration] = field(default_factory=dict)
    constraints: dict[tuple[str, int], bool] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error: str | None = None
    #: aggregate metric -> stats.Estimate, and the judged aggregate budgets (test_aggregate)
    aggregate: dict[str, Estimate] = field(default_factory=dict)
    judgements: list[Judgement] = field(default_factory=list)
    #: timings come from a cached generation (measured in an earlier run)
    cached_timings: bool = False

    # what the behavioural tests record, read back by the report: the only writers

    def note_drift(self, case_id: str, result: Drift) -> None:
        self.drift[case_id] = result

    def note_degeneration(self, case_id: str, result: Degeneration) -> None:
        self.degeneration[case_id] = result

    def note_constraint(self, case_id: str, index: int, ok: bool) -> None:
        self.constraints[(case_id, index)] = ok

    def note_aggregate(self, found: dict[str, Estimate], judged: list[Judgement]) -> None:
        self.aggregate, self.judgements = found, judged

    def note_outcome(self, outcome: str) -> None:
        """A test's pytest outcome (passed, failed, xfailed, ...), for the summary's counts."""
        self.outcomes[outcome] += 1
