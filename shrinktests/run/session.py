"""The state of one shrinktests run: model source, configs, suites, variants and results.

Pytest hooks and fixtures stay thin and delegate here. Everything expensive is lazy and
memoised twice (in memory for the run, on disk across runs): a warm run loads no model at all.
Generation happens once per (config, suite) as fixed batches; checks only read the results.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from shrinktests.accepted import AcceptedOutput, AcceptedRecord, low_margins, prompt_key
from shrinktests.compression.base import MethodUnavailable
from shrinktests.judging.constraints import Outcome
from shrinktests.judging.metrics import TeacherForced, teacher_forced
from shrinktests.judging.replay import Replay, replay
from shrinktests.run.cache import DiskCache, cache_key
from shrinktests.run.engine import (
    ZERO_TIMINGS,
    DecodingSettings,
    Generation,
    Timings,
    continuation_logprobs,
    generate,
    render_prompt,
)
from shrinktests.run.model import (
    ModelSource,
    default_model_source,
    load_tokenizer,
    local_model_source,
    set_determinism,
)
from shrinktests.run.numerics import numerics
from shrinktests.run.variant import Variant, VariantStats, build_variant
from shrinktests.spec import CompressionConfig, ConfigSet, Prompt, Suite

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from shrinktests.atlas.run import AtlasRun
    from shrinktests.judging.aggregate import PromptOutcome
    from shrinktests.run.reference import StoredReference



class ConfigCrashed(RuntimeError):
    """Building or running one config failed; only that config's tests fail."""


@dataclass(frozen=True)
class Case:
    """One prompt of one suite, the unit a test is parametrized over."""

    suite: Suite
    prompt: Prompt

    @property
    def id(self) -> str:
        # "." rather than "/": syrupy drops "/" from snapshot file names and then cannot
        # relate the file back to its test (it would call it unused).
        return f"{self.suite.name}.{self.prompt.id}"


@dataclass(frozen=True)
class SessionOptions:
    model: Path | None
    configs: ConfigSet
    suites: tuple[Suite, ...]
    cache_dir: Path | None
    threads: int
    snapshot_dir: Path
    #: where the baseline's distributions come from: "live" (run the reference model),
    #: "stored" (the top-k file beside the snapshots) or "auto" (stored when it matches)
    reference: str = "auto"
    #: --snapshot-update: record the baseline live and write the stored reference
    record: bool = False
    #: the accepted state of each config (snapshots/accepted/), replayed unless ``accept``
    accepted: Mapping[str, AcceptedRecord] = field(default_factory=dict)
    #: --shrink-accept-failures: judge this machine's outputs as they are, to record them
    accept: bool = False


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


class ShrinkSession:
    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.configs = options.configs
        self.cache = DiskCache(options.cache_dir / "results" if options.cache_dir else None)
        self._source: ModelSource | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._variants: dict[str, Variant] = {}
        self._failed: dict[str, BaseException] = {}
        self._generations: dict[tuple[str, str], list[Generation]] = {}
        self._tf: dict[tuple[str, str], list[TeacherForced]] = {}
        self._torch_ready = False
        self.runs: dict[str, ConfigRun] = defaultdict(ConfigRun)
        #: the extra_info of each benchmarked config, for the summary's throughput table
        self.bench_info: dict[str, dict[str, Any]] = {}
        self.generate_calls = 0
        self._checked: dict[tuple[str, str, int], Outcome] = {}
        self._stored: dict[str, StoredReference | None] = {}
        self._recorded: set[str] = set()
        #: why each suite uses a live reference in auto mode, or what was recorded
        self.reference_notes: dict[str, str] = {}
        self._atlas: AtlasRun | None = None
        #: live outputs replayed against the accepted ones: judged generations per (config,
        #: suite), how each (config, case id) related to its accepted output, what this
        #: machine's own output would have got where a near-tie flipped it
        self._judged: dict[tuple[str, str], list[Generation]] = {}
        self.replays: dict[str, dict[str, Replay]] = defaultdict(dict)
        self.flip_verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._records: dict[str, AcceptedRecord | None] = {}
        #: why a config's accepted record was not applied (recorded for another model/config)
        self.stale_records: dict[str, str] = {}
        #: outputs recorded for other prompts or decoding settings, per config
        self.stale_outputs: dict[str, int] = defaultdict(int)

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
        return [Case(s, p) for s in self.options.suites for p in s.prompts]

    @property
    def source(self) -> ModelSource:
        if self._source is None:
            self._ensure_torch()
            if self.options.model is None:
                self._source = default_model_source(self.options.cache_dir)
            else:
                self._source = local_model_source(self.options.model, self.options.cache_dir)
        return self._source

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.source)
        return self._tokenizer

    def _ensure_torch(self) -> None:
        if not self._torch_ready:
            set_determinism(self.options.threads)
            self._torch_ready = True

    def settings(self, suite: Suite) -> DecodingSettings:
        return DecodingSettings(max_new_tokens=suite.max_new_tokens,
                                chat_template=suite.chat_template)

    def _prompt_ids(self, suite: Suite) -> list[list[int]]:
        chat = self.settings(suite).chat_template
        return [render_prompt(self.tokenizer, p.text, chat) for p in suite.prompts]

    # ------------------------------------------------------------------ variants

    def variant(self, name: str) -> Variant:
        """The compressed model for ``name``, built on first use; failures are remembered."""
        if name in self._failed:
            self._raise_failure(name)
        if name not in self._variants:
            config = self.configs.get(name)
            ref_params = None
            if name != self.reference.name:
                ref_params = self.stats(self.reference.name).params
            with self._guard(name):
                self._ensure_torch()
                calibration = self.calibration() if config.uses_calibration else []
                self._variants[name] = build_variant(self.source, config, ref_params,
                                                     calibration)
            self.cache.put("stats", self._stats_key(name), self._variants[name].stats)
            self.runs[name].stats = self._variants[name].stats
        return self._variants[name]

    # ------------------------------------------------------------------ throughput

    def bench_workload(self) -> tuple[list[list[int]], DecodingSettings]:
        """The fixed workload of ``[settings.benchmark]``: the first N prompts of the first
        suite, each forced to exactly ``new_tokens`` tokens."""
        bench = self.configs.benchmark
        suite = self.options.suites[0]
        prompts = self._prompt_ids(suite)[: bench.prompts]
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
                          rss_scope: str) -> dict[str, Any]:
        """The ``extra_info`` of a config's benchmark; remembers its speed for "vs reference"."""
        stats = self.variant(name).stats
        ref = self.bench_info.get(self.reference.name)
        ref_tps = ref["generate_tps"] if ref else (
            timings.generate_tps if name == self.reference.name else None)
        info = self.bench_info[name] = {
            "config": name,
            "prompt_eval_tps": round(timings.prompt_tps, 2),
            "generate_tps": round(timings.generate_tps, 2),
            "vs_reference": round(timings.generate_tps / ref_tps, 3) if ref_tps else None,
            "load_compress_seconds": round(stats.load_seconds + stats.compress_seconds, 2),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "peak_rss_scope": rss_scope,
            "model_mb": round(stats.mb, 1),
            "bits_per_weight": round(stats.bits_per_weight, 2),
        }
        return info

    @contextmanager
    def _guard(self, name: str) -> Iterator[None]:
        """Run a step of config ``name``; if it raises, remember the failure (later calls fail
        at once) and fail only this config's test: one config crashing must not take down the
        others. A :class:`ConfigCrashed` from a step already remembered passes through."""
        try:
            yield
        except ConfigCrashed:
            raise
        except Exception as exc:
            self._failed[name] = exc
            self._raise_failure(name)

    def _raise_failure(self, name: str) -> NoReturn:
        exc = self._failed[name]
        if isinstance(exc, MethodUnavailable):
            import pytest

            pytest.skip(f"config {name!r} cannot run here: {exc}")
        self.runs[name].error = f"{type(exc).__name__}: {exc}"
        raise ConfigCrashed(f"config {name!r} failed: {type(exc).__name__}: {exc}") from exc

    def release(self, name: str) -> None:
        """Free a config's model once its tests are done (the reference stays loaded)."""
        if name != self.reference.name and self._variants.pop(name, None) is not None:
            gc.collect()

    def calibration(self) -> list[list[int]]:
        """Token ids of every prompt of the selected suites, for activation-aware methods."""
        return [ids for suite in self.options.suites for ids in self._prompt_ids(suite)]

    def _config_fp(self, name: str) -> str:
        """The config's fingerprint, plus the calibration prompts where its steps use them
        (a changed suite then changes that config's results instead of reusing stale ones)."""
        config = self.configs.get(name)
        if not config.uses_calibration:
            return config.fingerprint()
        return cache_key("calibrated", {"config": config.fingerprint(),
                                        "calibration": self.calibration()})

    def _stats_key(self, name: str) -> str:
        return cache_key("stats", {"model": self.source.fingerprint,
                                   "config": self._config_fp(name)})

    def cached_stats(self, name: str) -> VariantStats | None:
        """Stats already known (loaded variant or disk cache) without building anything."""
        if name in self._variants:
            return self._variants[name].stats
        cached: VariantStats | None = self.cache.get("stats", self._stats_key(name))
        return cached

    def stats(self, name: str) -> VariantStats:
        """Size/cost figures of a config, from the loaded variant or the disk cache."""
        if name in self._variants:
            return self._variants[name].stats
        cached = self.cache.get("stats", self._stats_key(name))
        if cached is not None:
            self.runs[name].stats = cached
            return cached  # type: ignore[no-any-return]
        return self.variant(name).stats

    # ------------------------------------------------------------------ results

    def _gen_key(self, name: str, suite: Suite) -> str:
        return cache_key("generation", {
            "model": self.source.fingerprint,
            "config": self._config_fp(name),
            "prompts": [p.text for p in suite.prompts],
            "decoding": self.settings(suite).key(),
            "numerics": self.numerics(),
        })

    def numerics(self) -> dict[str, str]:
        """What changes the rounding here (versions, CPU kernels, threads): part of the cache
        keys of everything computed by a forward pass, so a warm cache never hides a change
        of machine or thread count."""
        return numerics(self.options.threads)

    # ------------------------------------------------------------------ stored reference

    def reference_path(self, suite: Suite) -> Path:
        return self.options.snapshot_dir / "reference" / f"{suite.name}.safetensors"

    def _reference_header(self, suite: Suite, k: int) -> dict[str, Any]:
        from shrinktests.run.reference import FORMAT, tokenizer_hash

        tok = self.tokenizer
        return {
            "format": FORMAT, "model": self.source.fingerprint,
            "reference": self._config_fp(self.reference.name),
            "tokenizer": tokenizer_hash(tok.get_vocab(), tok.all_special_tokens),
            "decoding": self.settings(suite).key(),
            "prompts": cache_key("prompts", {"ids": self._prompt_ids(suite)}), "k": k,
        }

    def stored_reference(self, suite: Suite) -> StoredReference | None:
        """The suite's stored baseline distributions, when this run should use them.

        ``auto`` uses the file only when everything matches (else notes why and runs the
        baseline live); ``stored`` requires it, and tolerates another model fingerprint as
        long as tokenizer, prompts and decoding match (a candidate checkpoint gated against
        the recorded baseline).
        """
        from shrinktests.run.reference import ReferenceMismatch, load

        mode = self.options.reference
        if mode == "live" or self.options.record:
            return None
        if suite.name not in self._stored:
            path = self.reference_path(suite)
            ref: StoredReference | None = None
            if not path.exists():
                if mode == "stored":
                    raise ReferenceMismatch(f"{path}: no stored reference; record one with "
                                            "pytest suites/ --snapshot-update")
                self.reference_notes[suite.name] = "live (no stored reference)"
            else:
                ref = load(path)
                try:
                    ref.check(self._reference_header(suite, int(ref.header.get("k", 0))),
                              strict_model=mode == "auto")
                except ReferenceMismatch as exc:
                    if mode == "stored":
                        raise
                    self.reference_notes[suite.name] = f"live ({exc})"
                    ref = None
            if ref is not None:
                self.reference_notes[suite.name] = (
                    f"stored ({ref.size / 1024:.0f} KB, {ref.tokens} tokens, top-"
                    f"{ref.header['k']})")
            self._stored[suite.name] = ref
        return self._stored[suite.name]

    def record_reference(self, suite: Suite) -> Path:
        """Write the suite's stored reference from the live baseline (--snapshot-update);
        once per suite and run."""
        from shrinktests.run.reference import PromptReference, save, top_k

        if suite.name in self._recorded:
            return self.reference_path(suite)
        self._recorded.add(suite.name)
        k = self.configs.reference_top_k
        mass = self.configs.reference_mass
        base = self.generations(self.reference.name, suite)
        logps = continuation_logprobs(self.variant(self.reference.name).model,
                                      self.tokenizer.pad_token_id,
                                      [g.prompt_ids for g in base], [g.token_ids for g in base])
        prompts = []
        for g, lp in zip(base, logps, strict=True):
            ids, logp, counts, rest = top_k(lp, k, mass)
            prompts.append(PromptReference(g.prompt_ids, g.token_ids, g.text, g.finished, ids,
                                           logp, counts, rest))
        path = self.reference_path(suite)
        size = save(path, {**self._reference_header(suite, k), "mass": mass}, prompts)
        tokens = sum(len(g.token_ids) for g in base)
        self.reference_notes[suite.name] = (
            f"recorded {path} ({size / 1024:.0f} KB for {tokens} tokens, "
            f"{size / 1024 / max(tokens, 1) * 1000:.0f} KB per 1k tokens)")
        return path

    def _stored_generations(self, ref: StoredReference) -> list[Generation]:
        gens = []
        for p in ref.prompts:
            ids, logp = p.top(5)
            gens.append(Generation(prompt_ids=p.prompt_ids, token_ids=p.token_ids, text=p.text,
                                   finished=p.finished, top_ids=ids, top_logprobs=logp))
        return gens

    # ------------------------------------------------------------------ generation

    def generations(self, name: str, suite: Suite) -> list[Generation]:
        """The continuations of a suite that config ``name`` is judged on: this run's, except
        where they leave the config's accepted output at a near-tie (a machine-dependent flip,
        see :mod:`shrinktests.judging.replay`); then the accepted output."""
        live = self.live_generations(name, suite)
        if name == self.reference.name or self.options.accept:
            return live
        mem = (name, suite.name)
        if mem not in self._judged:
            record = self.accepted_record(name)
            decoding = self.settings(suite).key()
            own = self.configs.get(name).replay_epsilon
            epsilon = self.configs.replay_epsilon if own is None else own
            judged = []
            for prompt, gen in zip(suite.prompts, live, strict=True):
                case_id = Case(suite, prompt).id
                acc = record.outputs.get(case_id) if record else None
                if acc is not None and acc.prompt != prompt_key(gen.prompt_ids, decoding):
                    self.stale_outputs[name] += 1
                    acc = None
                r = replay(acc, gen, epsilon)
                self.replays[name][case_id] = r
                judged.append(acc.generation(gen.prompt_ids) if acc and r.judges_accepted
                              else gen)
            self._judged[mem] = judged
        return self._judged[mem]

    def live_generation(self, name: str, case: Case) -> Generation:
        """This run's own output of ``name`` on ``case`` (what a flip replaced)."""
        return self.live_generations(name, case.suite)[case.suite.prompts.index(case.prompt)]

    def replay(self, name: str, case: Case) -> Replay | None:
        """How ``name``'s output on ``case`` related to its accepted one (None: not judged)."""
        self.generations(name, case.suite)
        return self.replays.get(name, {}).get(case.id)

    # ------------------------------------------------------------------ accepted state

    def record_fingerprint(self, name: str) -> str:
        """What an accepted record must have been made for: the config's steps, plus the
        calibration prompts when its steps use them (unlike the cache key, not the version)."""
        config = self.configs.get(name)
        if not config.uses_calibration:
            return config.fingerprint()
        blob = json.dumps({"config": config.fingerprint(), "calibration": self.calibration()})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def accepted_record(self, name: str) -> AcceptedRecord | None:
        """The config's accepted record when it holds for this model and config; a stale one
        is noted in :attr:`stale_records` and not applied."""
        if name not in self._records:
            record = self.options.accepted.get(name)
            if record is not None and not self.options.accept:
                reason = record.stale_reason(self.source.fingerprint, self.source.label,
                                             self.record_fingerprint(name),
                                             self.configs.get(name).params())
                if reason is not None:
                    self.stale_records[name] = reason
                    record = None
            self._records[name] = record
        return self._records[name]

    def accepted_failures(self, name: str) -> Mapping[str, str]:
        record = self.accepted_record(name)
        return record.failures if record is not None else {}

    def generated(self) -> list[tuple[str, str]]:
        """The (config, suite) pairs whose live outputs this run holds."""
        return list(self._generations)

    def new_record(self, name: str, margins_below: float) -> AcceptedRecord:
        """This run's live outputs of ``name`` (suites generated this run) as a record."""
        outputs = {}
        for suite in self.options.suites:
            gens = self._generations.get((name, suite.name))
            if gens is None:
                continue
            decoding = self.settings(suite).key()
            for prompt, gen in zip(suite.prompts, gens, strict=True):
                outputs[Case(suite, prompt).id] = AcceptedOutput(
                    prompt_key(gen.prompt_ids, decoding), tuple(gen.token_ids), gen.text,
                    gen.finished, low_margins(gen, margins_below))
        return AcceptedRecord(
            config=name, model=self.source.fingerprint, model_label=self.source.label,
            fingerprint=self.record_fingerprint(name), steps=tuple(self.configs.get(name).params()),
            margins_below=margins_below, failures={}, outputs=outputs)

    # ------------------------------------------------------------------ live generation

    def live_generations(self, name: str, suite: Suite) -> list[Generation]:
        """All of a suite's continuations under config ``name`` on this machine: generated
        once, then cached (the reference's come from the stored reference when one is used)."""
        mem = (name, suite.name)
        if name == self.reference.name and mem not in self._generations:
            stored = self.stored_reference(suite)
            if stored is not None:
                self._generations[mem] = self._stored_generations(stored)
        if mem not in self._generations:
            key = self._gen_key(name, suite)
            cached = self.cache.get("generation", key)
            self.runs[name].cached_timings |= cached is not None
            if cached is None:
                model = self.variant(name).model
                with self._guard(name):
                    gens, timings = generate(model, self.tokenizer, self._prompt_ids(suite),
                                             self.settings(suite))
                self.generate_calls += 1
                cached = (gens, timings)
                self.cache.put("generation", key, cached)
            gens, timings = cached
            self._generations[mem] = gens
            self.runs[name].timings = self.runs[name].timings + timings
        return self._generations[mem]

    def generation(self, name: str, case: Case) -> Generation:
        return self.generations(name, case.suite)[case.suite.prompts.index(case.prompt)]

    def teacher_forced(self, name: str, suite: Suite) -> list[TeacherForced]:
        """Per-token comparison with the baseline on the baseline's own continuations."""
        mem = (name, suite.name)
        if mem not in self._tf:
            base = self.generations(self.reference.name, suite)
            stored = self.stored_reference(suite)
            key = cache_key("teacher-forced", {
                "gen": self._gen_key(self.reference.name, suite),
                "config": self._config_fp(name),
                "model": self.source.fingerprint,
                "reference": f"stored:{stored.header['k']}" if stored else "live",
                "numerics": self.numerics(),
            })
            cached = self.cache.get("teacher-forced", key)
            if cached is None and stored is not None:
                cached = self._teacher_forced_stored(name, stored)
                self.cache.put("teacher-forced", key, cached)
            if cached is None:
                prompts = [g.prompt_ids for g in base]
                conts = [g.token_ids for g in base]
                pad = self.tokenizer.pad_token_id
                base_lp = continuation_logprobs(self.variant(self.reference.name).model, pad,
                                                prompts, conts)
                with self._guard(name):
                    cand_lp = continuation_logprobs(self.variant(name).model, pad, prompts,
                                                    conts)
                cached = [teacher_forced(b, c, g.token_ids)
                          for b, c, g in zip(base_lp, cand_lp, base, strict=True)]
                self.cache.put("teacher-forced", key, cached)
            self._tf[mem] = cached
        return self._tf[mem]

    def _teacher_forced_stored(self, name: str, stored: StoredReference) -> list[TeacherForced]:
        from shrinktests.run.reference import teacher_forced_stored

        with self._guard(name):
            cand_lp = continuation_logprobs(
                self.variant(name).model, self.tokenizer.pad_token_id,
                [p.prompt_ids for p in stored.prompts], [p.token_ids for p in stored.prompts])
        return [teacher_forced_stored(p, lp) for p, lp in zip(stored.prompts, cand_lp,
                                                              strict=True)]

    def constraint(self, name: str, case: Case, index: int) -> Outcome:
        """Check ``index`` of the prompt on config ``name``'s output, once per run (code
        checks start a sandboxed interpreter, so they are not repeated for the report)."""
        key = (name, case.id, index)
        if key not in self._checked:
            text = self.generation(name, case).text
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
                    kl=tf.kl_mean, top1=tf.top1,
                    base_loop="repetition loop" in base.modes,
                    cand_loop="repetition loop" in cand.modes,
                    base_empty="silence" in base.modes, cand_empty="silence" in cand.modes,
                    base_met=tuple(self.constraint(self.reference.name, case, i).ok for i in n),
                    cand_met=tuple(self.constraint(name, case, i).ok for i in n)))
        return out

    def decode(self, ids: tuple[int, ...] | list[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))
