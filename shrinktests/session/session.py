"""The state of one shrinktests run, as a façade over a few parts.

- :class:`~shrinktests.run.inputs.RunInputs`: model source, tokenizer, prompts, fingerprints;
- :class:`~shrinktests.run.pool.VariantPool`: the compressed models, a crash remembered;
- :class:`~shrinktests.run.stored.StoredReferences`: the baseline's stored distributions;
- :class:`~shrinktests.accepted.state.AcceptedState`: each config's accepted outputs, replayed;
- and here, the results: generations and teacher-forced scores, memoised twice (in memory
  for the run, on disk across runs: a warm run loads no model at all). Generation happens
  once per (config, suite) as fixed batches; checks only read the results.

Pytest hooks and fixtures stay thin and call this class.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktests.accepted.record import AcceptedRecord
from shrinktests.accepted.replay import Replay
from shrinktests.accepted.state import AcceptedState
from shrinktests.core.generation import Generation
from shrinktests.judging.constraints import Outcome
from shrinktests.judging.metrics import TeacherForced, teacher_forced
from shrinktests.run.cache import DiskCache, cache_key
from shrinktests.run.engine import (
    DecodingSettings,
    Prefix,
    Timings,
    generate,
    iter_continuation_logprobs,
    known_prefix,
)
from shrinktests.run.inputs import Case, RunInputs, SessionOptions
from shrinktests.run.model import ModelSource
from shrinktests.run.pool import VariantPool, note_device_memory
from shrinktests.run.progress import Phase, PhaseClock, Progress
from shrinktests.run.resources import return_freed_memory
from shrinktests.run.results import ConfigCrashed, ConfigRun, Throughput
from shrinktests.run.stored import StoredReferences, stored_generations
from shrinktests.run.variant import Variant, VariantStats
from shrinktests.spec.files import CompressionConfig, Suite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from shrinktests.atlas.run import AtlasRun
    from shrinktests.judging.aggregate import PromptOutcome
    from shrinktests.run.reference import StoredReference

__all__ = ["Case", "ConfigCrashed", "ConfigRun", "SessionOptions", "ShrinkSession"]


class ShrinkSession:
    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.configs = options.configs
        self.cache = DiskCache(options.cache_dir / "results" if options.cache_dir else None)
        self.runs: dict[str, ConfigRun] = defaultdict(ConfigRun)
        self.inputs = RunInputs(options)
        #: what the run is doing (the plugin attaches a status line) and where its time goes
        self.progress = Progress()
        self.clock = PhaseClock()
        self._started = time.perf_counter()
        self.pool = VariantPool(self.inputs, self.cache, self.runs, self.progress, self.clock)
        self.stored = StoredReferences(self.inputs)
        self.accepted = AcceptedState(self.inputs)
        #: the extra_info of each benchmarked config, for the summary's throughput table
        self.bench_info: dict[str, Throughput] = {}
        self.generate_calls = 0
        self._generations: dict[tuple[str, str], list[Generation]] = {}
        self._judged: dict[tuple[str, str], list[Generation]] = {}
        self._tf: dict[tuple[str, str], list[TeacherForced]] = {}
        self._checked: dict[tuple[str, str, int], Outcome] = {}
        self._atlas: AtlasRun | None = None

    def elapsed(self) -> float:
        """Seconds since the run began (the wall time of the breakdown)."""
        return time.perf_counter() - self._started

    def attach_progress(self, progress: Progress) -> None:
        """Show what the run is doing through ``progress`` (the default shows nothing)."""
        self.progress = self.pool.progress = self.stored.progress = progress

    @property
    def atlas(self) -> AtlasRun | None:
        """The sensitivity atlas of the reference model, when ``[settings.atlas]`` asks."""
        if self._atlas is None and self.configs.atlas is not None:
            from shrinktests.atlas.run import AtlasRun

            self._atlas = AtlasRun(self, self.configs.atlas, self.configs.atlas_budgets)
        return self._atlas

    def atlas_results(self) -> bool:
        """Whether this run measured (or read) any atlas scope."""
        return self._atlas is not None and bool(self._atlas.results)

    # ------------------------------------------------------------------ inputs

    @property
    def reference(self) -> CompressionConfig:
        return self.configs.get(self.configs.reference)

    def cases(self) -> list[Case]:
        return self.inputs.cases()

    @property
    def source(self) -> ModelSource:
        return self.inputs.source

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.inputs.tokenizer

    def settings(self, suite: Suite) -> DecodingSettings:
        return self.inputs.settings(suite)

    def calibration(self) -> list[list[int]]:
        return self.inputs.calibration()

    def numerics(self) -> dict[str, str]:
        return self.inputs.numerics()

    def decode(self, ids: tuple[int, ...] | list[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # ------------------------------------------------------------------ variants

    def variant(self, name: str) -> Variant:
        """The compressed model for ``name``, built on first use; failures are remembered."""
        return self.pool.get(name)

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        with self.pool.guard(name):
            yield

    @contextmanager
    def _step(self, name: str, phase: Phase, doing: str) -> Iterator[None]:
        """A long step of config ``name``: shown as ``doing``, timed as ``phase``, a crash
        kept as the config's; what the step freed goes back to the system after it."""
        self.progress.status(doing)
        with self.guard(name), self.clock(phase, name):
            yield
        self.progress.clear()
        return_freed_memory()

    def release(self, name: str) -> None:
        self.pool.release(name)

    def cached_stats(self, name: str) -> VariantStats | None:
        return self.pool.cached_stats(name)

    def stats(self, name: str) -> VariantStats:
        return self.pool.stats(name)

    # ------------------------------------------------------------------ throughput

    def bench_workload(self) -> tuple[list[list[int]], DecodingSettings]:
        """The fixed workload of ``[settings.benchmark]``: the first N prompts of the first
        suite, each forced to exactly ``new_tokens`` tokens."""
        bench = self.configs.benchmark
        suite = self.options.suites[0]
        prompts = self.inputs.prompt_ids(suite)[: bench.prompts]
        settings = DecodingSettings(max_new_tokens=bench.new_tokens,
                                    min_new_tokens=bench.new_tokens,
                                    chat_template=suite.chat_template)
        return prompts, settings

    def run_workload(self, name: str) -> Timings:
        """One round of the benchmark workload on config ``name`` (never cached)."""
        prompts, settings = self.bench_workload()
        _, timings = generate(self.variant(name).model, self.tokenizer, prompts, settings)
        return timings

    def record_throughput(self, name: str, timings: Timings, peak_rss_mb: float,
                          rss_scope: str) -> Throughput:
        """The ``extra_info`` of a config's benchmark; remembers its speed for "vs reference"."""
        stats = self.variant(name).stats
        ref = self.bench_info.get(self.reference.name)
        ref_tps = ref["generate_tps"] if ref else (
            timings.generate_tps if name == self.reference.name else None)
        info = self.bench_info[name] = Throughput(
            config=name,
            reference=self.reference.name,
            prompt_eval_tps=round(timings.prompt_tps, 2),
            generate_tps=round(timings.generate_tps, 2),
            vs_reference=round(timings.generate_tps / ref_tps, 3) if ref_tps else None,
            load_compress_seconds=round(stats.load_seconds + stats.compress_seconds, 2),
            peak_rss_mb=round(peak_rss_mb, 1),
            peak_rss_scope=rss_scope,
            model_mb=round(stats.mb, 1),
            bits_per_weight=round(stats.bits_per_weight, 2),
        )
        return info

    # ------------------------------------------------------------------ stored reference

    @property
    def reference_notes(self) -> dict[str, str]:
        """Why each suite uses a live reference in auto mode, or what was recorded."""
        return self.stored.notes

    def stored_reference(self, suite: Suite) -> StoredReference | None:
        return self.stored.get(suite)

    def record_reference(self, suite: Suite) -> Path:
        """Write the suite's stored reference from the live baseline (--snapshot-update)."""
        base = self.generations(self.reference.name, suite)
        return self.stored.record(suite, base, self.variant(self.reference.name).model)

    # ------------------------------------------------------------------ accepted state

    @property
    def replays(self) -> dict[str, dict[str, Replay]]:
        return self.accepted.replays

    @property
    def flip_verdicts(self) -> dict[tuple[str, str], list[str]]:
        return self.accepted.flip_verdicts

    def note_flip_verdict(self, name: str, case_id: str, verdict: str) -> None:
        """What this machine's own output got where a near-tie flipped it from the accepted
        one (reported beside the verdict, which the accepted output decides)."""
        self.accepted.flip_verdicts[(name, case_id)].append(verdict)

    @property
    def stale_records(self) -> dict[str, str]:
        return self.accepted.stale_records

    @property
    def foreign_records(self) -> dict[str, str]:
        return self.accepted.foreign

    @property
    def stale_outputs(self) -> dict[str, int]:
        return self.accepted.stale_outputs

    def accepted_failures(self, name: str) -> Mapping[str, str]:
        return self.accepted.failures(name)

    def foreign_cpu(self, name: str) -> str | None:
        return self.accepted.foreign_cpu(name)

    def aggregate_scope(self, name: str) -> str | None:
        return self.accepted.aggregate_scope(name)

    def new_record(self, name: str, margins_below: float) -> AcceptedRecord:
        """This run's live outputs of ``name`` (suites generated this run) as a record."""
        generated = {suite: gens for (config, suite), gens in self._generations.items()
                     if config == name}
        return self.accepted.new_record(name, margins_below, generated)

    def generated(self) -> list[tuple[str, str]]:
        """The (config, suite) pairs whose live outputs this run holds."""
        return list(self._generations)

    # ------------------------------------------------------------------ generation

    def generations(self, name: str, suite: Suite) -> list[Generation]:
        """The continuations of a suite that config ``name`` is judged on: this run's, except
        where they leave the config's accepted output at a near-tie (a machine-dependent flip,
        see :mod:`shrinktests.accepted.replay`); then the accepted output."""
        live = self.live_generations(name, suite)
        if name == self.reference.name or self.options.accept:
            return live
        mem = (name, suite.name)
        if mem not in self._judged:
            self._judged[mem] = self.accepted.judge(name, suite, live)
        return self._judged[mem]

    def generation(self, name: str, case: Case) -> Generation:
        return self.generations(name, case.suite)[case.suite.prompts.index(case.prompt)]

    def live_generation(self, name: str, case: Case) -> Generation:
        """This run's own output of ``name`` on ``case`` (what a flip replaced)."""
        return self.live_generations(name, case.suite)[case.suite.prompts.index(case.prompt)]

    def replay(self, name: str, case: Case) -> Replay | None:
        """How ``name``'s output on ``case`` related to its accepted one (None: not judged)."""
        self.generations(name, case.suite)
        return self.replays.get(name, {}).get(case.id)

    def live_generations(self, name: str, suite: Suite) -> list[Generation]:
        """All of a suite's continuations under config ``name`` on this machine: generated
        once, then cached (the reference's come from the stored reference when one is used)."""
        mem = (name, suite.name)
        if name == self.reference.name and mem not in self._generations:
            stored = self.stored_reference(suite)
            if stored is not None:
                self._generations[mem] = stored_generations(stored)
        if mem not in self._generations:
            resume = name != self.reference.name
            key = self.inputs.generation_key(name, suite)
            if resume:  # resumed after the prefix it shares with the baseline's tokens (the
                # same whether they come from the stored reference or a live baseline)
                key = cache_key("generation", {
                    "own": key, "after": self.inputs.generation_key(self.reference.name,
                                                                    suite)})
            cached = self.cache.get("generation", key)
            self.runs[name].cached_timings |= cached is not None
            if cached is None:
                prefixes = self._prefixes(name, suite) if resume else None
                model = self.variant(name).model
                prompts = self.inputs.prompt_ids(suite)

                doing = f"{name}: generating {suite.name} ({len(prompts)} prompts)"

                def step(rows: int, done: int, most: int) -> None:
                    self.progress.status(f"{doing}, step {done}/{most}, {rows} rows running")

                with self._step(name, "generate", doing):
                    gens, timings = generate(model, self.tokenizer, prompts,
                                             self.settings(suite), on_step=step,
                                             prefixes=prefixes)
                note_device_memory(self.variant(name).stats, self.inputs.device)
                self.generate_calls += 1
                cached = (gens, timings)
                self.cache.put("generation", key, cached)
            gens, timings = cached
            self._generations[mem] = gens
            self.runs[name].timings = self.runs[name].timings + timings
        return self._generations[mem]

    def _prefixes(self, name: str, suite: Suite) -> list[Prefix | None]:
        """Where config ``name``'s greedy output is already known: the teacher-forced pass
        over the baseline's continuation gives the config's argmax at every step, and up to
        the first step where that is not the baseline's token, greedy generation would
        reproduce the baseline's tokens. Generation resumes there (good configs part after
        5-70 tokens), at the cost of one prefill over the prefix."""
        base = self.generations(self.reference.name, suite)
        return [known_prefix(g, tf.cand_top_ids, tf.cand_top_logp)
                for g, tf in zip(base, self.teacher_forced(name, suite), strict=True)]

    # ------------------------------------------------------------------ teacher-forced

    def scored(self, name: str, suite: Suite) -> bool:
        """Whether config ``name``'s teacher-forced pass over ``suite`` ran in this run."""
        return (name, suite.name) in self._tf

    def tf_key(self, name: str, suite: Suite) -> str:
        stored = self.stored_reference(suite)
        return cache_key("teacher-forced", {
            "gen": self.inputs.generation_key(self.reference.name, suite),
            "config": self.inputs.config_fp(name),
            "model": self.source.fingerprint,
            "reference": f"stored:{stored.header['k']}" if stored else "live",
            "numerics": self.numerics(),
            "candidate_top_k": 5,
        })

    def teacher_forced(self, name: str, suite: Suite) -> list[TeacherForced]:
        """Per-token comparison with the baseline on the baseline's own continuations."""
        mem = (name, suite.name)
        if mem not in self._tf:
            base = self.generations(self.reference.name, suite)
            stored = self.stored_reference(suite)
            key = self.tf_key(name, suite)
            cached = self.cache.get("teacher-forced", key)
            if cached is None and stored is not None:
                cached = self._teacher_forced_stored(name, stored)
                self.cache.put("teacher-forced", key, cached)
            if cached is None:
                prompts = [g.prompt_ids for g in base]
                conts = [g.token_ids for g in base]
                pad = self.tokenizer.pad_token_id
                base_model = self.variant(self.reference.name).model
                model = self.variant(name).model
                doing = f"{name}: teacher-forced scoring of {suite.name} against the live " \
                        "baseline"
                with self._step(name, "teacher-forced", doing):
                    # prompt by prompt, both models in step: one chunk of full-vocabulary
                    # log-probs per model in memory, not the suite's
                    pairs = zip(iter_continuation_logprobs(base_model, pad, prompts, conts),
                                iter_continuation_logprobs(model, pad, prompts, conts),
                                strict=True)
                    cached = []
                    for (i, b), (_, c) in pairs:
                        cached.append(teacher_forced(b, c, base[i].token_ids))
                        self.progress.status(f"{doing}, prompt {len(cached)}/{len(prompts)}")
                self.cache.put("teacher-forced", key, cached)
            self._tf[mem] = cached
        return self._tf[mem]

    def _teacher_forced_stored(self, name: str, stored: StoredReference) -> list[TeacherForced]:
        from shrinktests.run.reference import teacher_forced_stored

        model = self.variant(name).model
        doing = f"{name}: teacher-forced scoring against the stored reference"
        n = len(stored.prompts)
        with self._step(name, "teacher-forced", doing):
            out = []
            for i, lp in iter_continuation_logprobs(model, self.tokenizer.pad_token_id,
                                                    [p.prompt_ids for p in stored.prompts],
                                                    [p.token_ids for p in stored.prompts]):
                out.append(teacher_forced_stored(stored.prompts[i], lp))
                self.progress.status(f"{doing}, prompt {len(out)}/{n}")
        return out

    # ------------------------------------------------------------------ judgements

    def constraint(self, name: str, case: Case, index: int) -> Outcome:
        """Check ``index`` of the prompt on config ``name``'s output, once per run (code
        checks start a sandboxed interpreter, so they are not repeated for the report)."""
        key = (name, case.id, index)
        if key not in self._checked:
            text = self.generation(name, case).text
            with self.clock("checks", name):
                self._checked[key] = case.prompt.checks[index].check(text)
        return self._checked[key]

    def prompt_outcomes(self, name: str) -> list[PromptOutcome]:
        """Per prompt of every suite: drift, loops, silence and constraints met, for the
        baseline and config ``name`` (judged with ``name``'s budgets), for the aggregates."""
        from shrinktests.judging.aggregate import PromptOutcome
        from shrinktests.judging.checks import degeneration

        budgets = self.configs.get(name).budgets
        out = []
        for suite in self.options.suites:
            tfs = self.teacher_forced(name, suite)
            for prompt, tf in zip(suite.prompts, tfs, strict=True):
                case = Case(suite, prompt)
                base = degeneration(self.generation(self.reference.name, case), budgets,
                                    prompt.max_items)
                cand = degeneration(self.generation(name, case), budgets, prompt.max_items)
                n = range(len(prompt.checks))
                out.append(PromptOutcome(
                    kl=tf.kl_mean, top1=tf.top1_beyond_ties(self.configs.near_tie_epsilon),
                    base_loop="repetition loop" in base.modes,
                    cand_loop="repetition loop" in cand.modes,
                    base_empty="silence" in base.modes, cand_empty="silence" in cand.modes,
                    base_met=tuple(self.constraint(self.reference.name, case, i).ok for i in n),
                    cand_met=tuple(self.constraint(name, case, i).ok for i in n)))
        return out
