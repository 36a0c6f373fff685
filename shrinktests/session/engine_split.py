"""Which engine moved what: the same GGUF weights under transformers and under llama.cpp.

A GGUF candidate run by llama.cpp differs from the baseline run by transformers in two ways
at once: its weights (the quantization) and its arithmetic (llama.cpp's kernels). The field's
question after a regression is which of the two it was. With the weights held fixed on one
side and the engine on the other, four teacher-forced comparisons on the baseline's
continuations split it:

- the baseline's own weights, transformers vs llama.cpp: the engine alone;
- the candidate's weights, transformers vs llama.cpp: the engine, on the quantized model;
- candidate vs baseline under transformers: the weights alone, in PyTorch's arithmetic;
- candidate vs baseline under llama.cpp: the weights alone, in llama.cpp's arithmetic.

A comparison needs both of its configs in the configs file (and in the run); the rows whose
configs are missing are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shrinktests.spec.files import CompressionConfig, Suite

if TYPE_CHECKING:
    from shrinktests.judging.metrics import TeacherForced
    from shrinktests.session.session import ShrinkSession


@dataclass(frozen=True)
class Comparison:
    """One row of the split: config ``a`` is the side compared against (its log-probs are
    the reference of the KL), ``b`` the other."""

    candidate: str  # the llama.cpp config the row belongs to
    what: str
    a: str
    b: str


@dataclass(frozen=True)
class EngineGroup:
    """A llama.cpp config with its twins: the same weights under transformers, and the
    model's own GGUF file under llama.cpp (the baseline's weights in llama.cpp)."""

    candidate: str
    twin: str | None
    own: str | None

    def comparisons(self, reference: str) -> list[Comparison]:
        c, rows = self.candidate, []
        if self.own is not None:
            rows.append(Comparison(c, "engine alone (baseline weights)",
                                   reference, self.own))
        if self.candidate == self.own:
            return rows
        if self.twin is not None and self.twin != reference:
            rows.append(Comparison(c, "engine alone (candidate weights)",
                                   self.twin, c))
            rows.append(Comparison(c, "weights alone (transformers)", reference,
                                   self.twin))
        if self.own is not None:
            rows.append(Comparison(c, "weights alone (llama.cpp)", self.own, c))
        return rows


def _weights(config: CompressionConfig) -> object:
    """What fixes a config's weights, whatever runs them."""
    if config.artifact is not None:
        return ("file", str(config.artifact.path))
    return ("steps", tuple(str(s.params()) for s in config.steps))


def engine_groups(configs: Sequence[CompressionConfig], reference: str,
                  source_is_gguf: bool) -> list[EngineGroup]:
    """Each llama.cpp config with its twins among ``configs``. The model's own GGUF under
    llama.cpp (a llama.cpp config with no steps) is the baseline's weights only when the
    model under test was read from that GGUF file; then the reference is its twin."""
    llama = [c for c in configs if c.engine == "llama.cpp"]
    own = next((c.name for c in llama if not c.steps and c.artifact is None), None)
    own = own if source_is_gguf else None
    groups = []
    for c in llama:
        if c.name == own:
            groups.append(EngineGroup(c.name, reference, own))
            continue
        twin = next((t.name for t in configs if t.engine == "transformers"
                     and t.name != reference and _weights(t) == _weights(c)), None)
        groups.append(EngineGroup(c.name, twin, own))
    return groups


def split_rows(session: ShrinkSession) -> list[dict[str, Any]]:
    """The split for every llama.cpp config whose drift this run measured, as report rows:
    per comparison, mean KL and top-1 agreement over the prompts with bootstrap intervals
    at the run's confidence. Where a comparison cannot run (a config crashed or cannot run
    here), its row says why instead of taking the summary down."""
    from shrinktests.judging.stats import bootstrap_mean

    names = set(session.configs.names())
    reference = session.reference.name
    groups = engine_groups(session.configs.configs, reference,
                           session.source.gguf is not None)
    rows: list[dict[str, Any]] = []
    level = session.configs.confidence
    for group in groups:
        suites = [s for s in session.options.suites if session.scored(group.candidate, s)]
        if not suites:
            continue
        for comp in group.comparisons(reference):
            if not {comp.a, comp.b} <= names:
                continue
            row: dict[str, Any] = {"candidate": comp.candidate, "what": comp.what,
                                   "a": comp.a, "b": comp.b}
            try:
                tfs = [tf for s in suites for tf in _compare(session, comp.a, comp.b, s)]
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                continue
            for key, values in (("kl", [t.kl_mean for t in tfs]),
                                ("top1", [t.top1 for t in tfs])):
                e = bootstrap_mean(values, level)
                row[key] = [e.value, e.low, e.high, None, True]
            row["prompts"] = len(tfs)
            rows.append(row)
    return rows


def _compare(session: ShrinkSession, a: str, b: str, suite: Suite) -> list[TeacherForced]:
    """Config ``b`` teacher-forced against config ``a`` on the baseline's continuations of
    ``suite``; against the reference, it is ``b``'s own drift pass."""
    from shrinktests.judging.metrics import teacher_forced
    from shrinktests.run.cache import cache_key
    from shrinktests.run.engine import iter_continuation_logprobs

    if a == session.reference.name:
        return session.teacher_forced(b, suite)
    key = cache_key("engine-split", {"a": session.tf_key(a, suite),
                                     "b": session.tf_key(b, suite)})
    cached: list[TeacherForced] | None = session.cache.get("teacher-forced", key)
    if cached is None:
        base = session.generations(session.reference.name, suite)
        prompts = [g.prompt_ids for g in base]
        conts = [g.token_ids for g in base]
        pad = session.tokenizer.pad_token_id
        session.progress.status(f"engine split: {b} against {a} on {suite.name}")
        model_a, model_b = session.variant(a).model, session.variant(b).model
        with session.clock("teacher-forced", b):
            pairs = zip(iter_continuation_logprobs(model_a, pad, prompts, conts),
                        iter_continuation_logprobs(model_b, pad, prompts, conts), strict=True)
            cached = [teacher_forced(la, lb, base[i].token_ids) for (i, la), (_, lb) in pairs]
        session.progress.clear()
        session.cache.put("teacher-forced", key, cached)
    return cached
