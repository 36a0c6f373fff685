"""The summary data every report renders, as typed dictionaries.

Plain JSON-able dictionaries because they cross processes (an xdist worker sends its summary
to the controller as JSON) and are written as ``data.json``; typed so the renderers and the
merge agree on the keys. Built by :func:`shrinktests.report.build.summary_data`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

if TYPE_CHECKING:
    from shrinktests.atlas.run import AtlasData
    from shrinktests.run.results import Throughput


class ConfigMetrics(TypedDict):
    """Every figure of one config (None: not measured this run)."""

    name: str
    expect: str
    verdict: str
    tps: float | None
    cached_tps: bool
    vs_ref: float | None
    mb: float | None
    bits: float | None
    #: bits per weight of the linear weights the config changed (None: none, or unknown)
    quantized_bits: NotRequired[float | None]
    compress_s: float | None
    rel_err: float | None
    kl: float | None
    top1: float | None
    div_median: float | None
    diverged: int
    prompts: int
    identical: int
    near_ties: int
    #: outputs replayed against the accepted ones; those that left the accepted output at a
    #: near-tie on this machine (the accepted output judged; the "near-ties" column, called
    #: "flips" before 2-way flips were reported); real changes (this run's output judged)
    replayed: int
    replay_near_ties: int
    changed: int
    unrecorded: int
    outputs: int
    loops: int
    empty: int
    modes: dict[str, int]
    truncated: int
    mean_tokens: float | None
    distinct_2: float | None
    constraints: int
    met: int
    adherence: float | None
    #: non-strict xfails whose check passed (expected-to-break configs, advisory checks)
    xpassed: int
    #: its per-prompt checks are advisory here (weights calibrated for another machine)
    advisory: bool


class Example(TypedDict):
    """One prompt's baseline and config continuations, split at the first divergence."""

    case: str
    prompt: str
    divergence: int | None
    near_tie: bool
    kl: float | None
    top1: float | None
    prefix: str
    base: str
    cand: str


#: an aggregate estimate: [value, low, high, p or None, significant]
Interval = list[Any]


class Power(TypedDict):
    """What a config's aggregate comparison could detect, and its two-way flips
    (:func:`shrinktests.judging.aggregate.detectable`, :func:`~.aggregate.flips`)."""

    #: the power the detectable effects are stated at (0.8), at the summary's ``level``
    power: float
    #: aggregate metric -> minimum detectable effect (rates as fractions, KL in nats)
    mde: dict[str, float]
    #: aggregate metric -> paired outcomes it rests on (constraints, or prompts)
    pairs: dict[str, int]
    #: "adherence", "loops", "empty" -> [lost, gained] against the baseline
    flips: dict[str, list[int]]
    #: every aggregate budget of the config held (judged, none failed)
    gate_passed: bool


class SummaryData(TypedDict):
    """What a run (or the merge of several workers' runs) reports."""

    configs: dict[str, ConfigMetrics]
    tested: list[str]
    details: dict[str, str]
    near_ties: list[str]
    replays: list[str]
    stale: list[str]
    aggregates: dict[str, dict[str, Interval]]
    #: per config with aggregates: minimum detectable effects and two-way flips (absent from
    #: data written before they were reported; read with ``.get("power", {})``)
    power: NotRequired[dict[str, Power]]
    #: which engine moved what, per llama.cpp config (:mod:`shrinktests.session.engine_split`)
    engines: list[dict[str, Any]]
    judgements: list[str]
    reference: list[str]
    level: float
    examples: dict[str, list[Example]]
    #: per config: [case id, first divergence or None, baseline length] per prompt
    timeline: dict[str, list[list[Any]]]
    cached_timings: bool
    model: str
    numerics: str
    generate_calls: int
    hits: int
    misses: int
    workers: int
    bench: dict[str, Throughput]
    workload: str
    #: the atlas' own data (:meth:`shrinktests.atlas.run.AtlasRun.data`), or None
    atlas: AtlasData | None
    #: seconds per phase of the run (load, compress, generate, ...), summed over workers
    phases: dict[str, float]
    #: config name -> phase -> seconds, summed over workers
    config_phases: dict[str, dict[str, float]]
