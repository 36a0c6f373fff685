"""Sensitivity atlas: which layers and sub-blocks a quantizer may touch, measured one at a time.

Rounding parts of a 1B model to 2 bits showed that *where* the error lands matters more
than how much of it there is: layer 0's MLP (lower reconstruction MSE) moved the output far more
than layer 0's attention. The atlas makes that a measurement. For every scope (decoder layer x
attention / MLP, or x tensor family) it swaps the method's output into the live reference
model, scores the baseline continuations teacher-forced in one batched pass (KL, top-1, and the
first divergence of free-running greedy generation, which teacher forcing gives exactly: greedy
decoding follows the baseline until the first step whose argmax differs), records the scope's
reconstruction error, and swaps the original weights back, checking them bit for bit.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shrinktests.atlas.resume import LayerInputs
from shrinktests.compression.base import Method, ScopedMethod
from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.scope import Scope
from shrinktests.judging.metrics import BaselineSide, TeacherForced
from shrinktests.spec.atlas import FAMILIES, PARTS

if TYPE_CHECKING:
    import torch

    from shrinktests.run.engine import ChunkForward

class AtlasError(RuntimeError):
    """The atlas cannot measure or restore the model faithfully (nothing is reported then)."""


@dataclass(frozen=True)
class AtlasScope:
    """One decoder layer's attention or MLP (or one tensor family of it)."""

    layer: int
    part: str

    @property
    def id(self) -> str:
        return f"L{self.layer:02d}.{self.part}"

    def scope(self) -> Scope:
        if self.part in PARTS:
            return Scope(part=self.part, layers=(self.layer,))  # type: ignore[arg-type]
        return Scope(layers=(self.layer,), include=f"*.{self.part}")


def atlas_scopes(n_layers: int, parts: Sequence[str]) -> list[AtlasScope]:
    """Every (layer, part), layer by layer."""
    return [AtlasScope(layer, part) for layer in range(n_layers) for part in parts]


def parse_scope_id(scope_id: str) -> AtlasScope:
    """Inverse of :attr:`AtlasScope.id` (``"L03.mlp"``)."""
    layer, _, part = scope_id.partition(".")
    if not layer.startswith("L") or not layer[1:].isdigit() or part not in PARTS + FAMILIES:
        raise ValueError(f"not a scope id: {scope_id!r} (expected e.g. 'L03.mlp')")
    return AtlasScope(int(layer[1:]), part)


# --------------------------------------------------------------------------- pure summaries


@dataclass(frozen=True)
class ScopeDrift:
    """Teacher-forced drift of one perturbation over every scored continuation."""

    kl_mean: float  # mean over prompts of the per-prompt mean KL(base‖perturbed)
    kl_max: float
    top1: float  # mean over prompts of the per-prompt top-1 agreement
    #: per prompt: first continuation token where greedy decoding would leave the baseline
    #: (None: it never does within the continuation)
    divergences: tuple[int | None, ...]
    lengths: tuple[int, ...]
    #: divergences at a step where the baseline's top-1/top-2 margin is below epsilon
    near_ties: int

    @property
    def first_divergence(self) -> float:
        """Median first divergence, a prompt that never diverges counting as its length."""
        values = [float(n if d is None else d)
                  for d, n in zip(self.divergences, self.lengths, strict=True)]
        return statistics.median(values) if values else 0.0

    @property
    def identical(self) -> int:
        return sum(1 for d in self.divergences if d is None)

    def values(self) -> dict[str, float | None]:
        """The figures budgets are written on."""
        return {"kl_mean": self.kl_mean, "kl_max": self.kl_max, "top1": self.top1,
                "first_divergence": self.first_divergence}


def first_disagreement(tf: TeacherForced) -> int | None:
    """First step whose argmax differs from the baseline's: where free-running greedy decoding
    of the perturbed model first leaves the baseline continuation (None: never)."""
    off = np.flatnonzero(~tf.top1_agree)
    return int(off[0]) if off.size else None


def drift_summary(tfs: Sequence[TeacherForced], epsilon: float) -> ScopeDrift:
    """Summarise per-prompt teacher-forced comparisons (pure; see :class:`ScopeDrift`)."""
    divs = [first_disagreement(tf) for tf in tfs]
    ties = sum(1 for d, tf in zip(divs, tfs, strict=True)
               if d is not None and tf.base_margin[d] < epsilon)
    scored = [tf for tf in tfs if tf.n]
    return ScopeDrift(
        kl_mean=statistics.fmean(tf.kl_mean for tf in scored) if scored else 0.0,
        kl_max=max((tf.kl_max for tf in scored), default=0.0),
        top1=statistics.fmean(tf.top1 for tf in scored) if scored else 1.0,
        divergences=tuple(divs), lengths=tuple(tf.n for tf in tfs), near_ties=ties)


@dataclass(frozen=True)
class ScopeResult:
    """What perturbing one scope did: its size, its reconstruction error and the drift."""

    scope: str
    layer: int
    part: str
    tensors: int
    params: int
    bits_per_weight: float
    #: mean squared error over the scope's weights; ||ΔW||_F / ||W||_F over the scope
    mse: float
    rel_error: float
    drift: ScopeDrift
    seconds: float
    #: MSE of the scope's weights at other bit widths of a blockwise method (for recipes)
    mse_by_bits: dict[int, float] = field(default_factory=dict)


def ranked(results: Sequence[ScopeResult]) -> list[ScopeResult]:
    """Most sensitive first (mean KL, then top-1 disagreement, then scope id)."""
    return sorted(results, key=lambda r: (-r.drift.kl_mean, r.drift.top1, r.scope))


# --------------------------------------------------------------------------- measuring


@dataclass
class Probe:
    """The scored continuations and the reference model's full distributions over them."""

    prompts: list[tuple[int, ...]]
    continuations: list[tuple[int, ...]]
    pad_id: int
    epsilon: float
    baseline: list[npt.NDArray[np.float32]] = field(default_factory=list)
    batch_size: int = 8
    #: the unperturbed state entering each decoder layer (None: every pass runs whole)
    layer_inputs: LayerInputs | None = None
    _sides: list[BaselineSide] = field(default_factory=list, repr=False)

    def logprobs(self, model: torch.nn.Module, forward: ChunkForward | None = None,
                 ) -> list[npt.NDArray[np.float32]]:
        from shrinktests.run.engine import continuation_logprobs

        return continuation_logprobs(model, self.pad_id, self.prompts, self.continuations,
                                     self.batch_size, by_length=True, forward=forward)

    def record(self, model: torch.nn.Module) -> None:
        """Score the unperturbed model once (held in memory: [tokens, vocab] float32), keeping
        the state entering each decoder layer where a pass can start there: checked here
        against the whole pass, bit for bit, or not used."""
        self._sides = []
        inputs = LayerInputs(model)
        if not inputs.usable:
            self.baseline, self.layer_inputs = self.logprobs(model), None
            return
        self.baseline = self.logprobs(model, inputs.recording())
        middle = len(inputs.chunks[0]) // 2 if inputs.chunks else 0
        same = all(np.array_equal(a, b) for a, b in zip(
            self.baseline, self.logprobs(model, inputs.from_layer(middle)), strict=True))
        self.layer_inputs = inputs if same else None

    def drift(self, model: torch.nn.Module, layer: int | None = None) -> ScopeDrift:
        """Drift of ``model`` from the baseline; with ``layer``, the model differs from the
        unperturbed one only from that decoder layer on, and the pass starts there."""
        from shrinktests.judging.metrics import teacher_forced

        if not self.baseline:
            raise AtlasError("record the baseline distributions before measuring drift")
        forward = (self.layer_inputs.from_layer(layer)
                   if layer is not None and self.layer_inputs is not None else None)
        tfs = [teacher_forced(b, c, t, candidate_top=False) for b, c, t in
               zip(self.baseline_sides(), self.logprobs(model, forward), self.continuations,
                   strict=True)]
        return drift_summary(tfs, self.epsilon)

    def baseline_sides(self) -> list[BaselineSide]:
        """The baseline's half of every comparison, computed once for all scopes."""
        if not self._sides:
            self._sides = [BaselineSide.of(b) for b in self.baseline]
        return self._sides

    def max_difference(self, model: torch.nn.Module) -> float:
        """Largest |log-prob| difference between ``model`` and the recorded baseline."""
        now = self.logprobs(model)
        return max((float(np.abs(a - b).max()) for a, b in zip(self.baseline, now, strict=True)
                    if a.size), default=0.0)


@contextmanager
def swapped(model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]],
            spill: Path | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Let a method rewrite or replace ``modules``; afterwards put back the original modules
    and bit-identical weights, whatever the method did, and check that it worked.

    With ``spill`` (a folder), the originals are kept there instead of in memory and read back
    one at a time, and nothing is yielded: a whole model's weights would otherwise be held
    twice while it is compressed and scored (0.42 GB for a 135M model's decoder).
    """
    import torch

    saved: dict[str, tuple[torch.Tensor | Path, torch.Tensor | Path | None]] = {}
    for i, (name, m) in enumerate(modules):
        saved[name] = (_keep(m.weight, spill, f"{i}.weight"),
                       None if m.bias is None else _keep(m.bias, spill, f"{i}.bias"))
    try:
        yield {name: w for name, (w, _) in saved.items() if isinstance(w, torch.Tensor)}
    finally:
        failed = []
        with torch.no_grad():
            for name, module in modules:
                parent_name, _, leaf = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                if getattr(parent, leaf) is not module:  # a backend swapped in its own module
                    setattr(parent, leaf, module)
                kept_weight, kept_bias = saved.pop(name)
                weight = _kept(kept_weight)
                _restore(module, "weight", weight)
                if kept_bias is not None:
                    _restore(module, "bias", _kept(kept_bias))
                if model.get_submodule(name) is not module or not torch.equal(
                        module.weight, weight):
                    failed.append(name)
    if failed:
        raise AtlasError(f"{failed[0]} could not be restored bit for bit")


def _keep(tensor: torch.Tensor, spill: Path | None, stem: str) -> torch.Tensor | Path:
    """A copy of ``tensor``, in memory or (with ``spill``) in a file of that folder."""
    import torch

    copy = tensor.detach().clone()  # its own storage: torch.save writes a view's whole one
    if spill is None:
        return copy
    path = spill / f"{stem}.pt"
    torch.save(copy, path)
    return path


def _kept(kept: torch.Tensor | Path) -> torch.Tensor:
    import torch

    if isinstance(kept, torch.Tensor):
        return kept
    value: torch.Tensor = torch.load(kept, weights_only=True)
    return value


def _restore(module: torch.nn.Module, attr: str, value: torch.Tensor) -> None:
    import torch

    current = getattr(module, attr)
    if type(current) is torch.nn.Parameter and current.dtype == value.dtype and (
            current.shape == value.shape):
        current.copy_(value)
    else:  # a tensor subclass or another dtype took its place
        setattr(module, attr, torch.nn.Parameter(value.clone(), requires_grad=False))


def scope_error(before: dict[str, torch.Tensor],
                model: torch.nn.Module) -> tuple[float, float]:
    """(MSE, relative Frobenius error) over all weights of a perturbed scope together."""
    import torch

    from shrinktests.compression.measure import effective_weight

    sq = norm = 0.0
    numel = 0
    with torch.no_grad():
        for name, original in before.items():
            approx = effective_weight(model.get_submodule(name)).to(torch.float64)
            orig = original.to(torch.float64)
            sq += float(((approx - orig) ** 2).sum())
            norm += float((orig**2).sum())
            numel += orig.numel()
    return (sq / numel if numel else 0.0), (float(np.sqrt(sq / norm)) if norm else 0.0)


def mse_curve(weights: dict[str, torch.Tensor], method: ScopedMethod,
              bits: Sequence[int]) -> dict[int, float]:
    """MSE over ``weights`` after the blockwise quantizer at each width (its own codebook at its
    own width, the default one at the others, as a recipe's rules would use them)."""
    from shrinktests.compression.blockwise import fake_quantize

    if not isinstance(method, BlockwiseQuant):
        raise AtlasError(f"an error curve needs the blockwise quantizer, not {method.name!r}")
    out = {}
    for b in bits:
        levels = method.levels if b == method.bits else None
        sq = n = 0.0
        for w in weights.values():
            x = w.detach().float().cpu().numpy()
            d = fake_quantize(x, b, method.block_size, levels).astype(np.float64) - x
            sq += float((d * d).sum())
            n += x.size
        out[b] = sq / n if n else 0.0
    return out


@dataclass(frozen=True)
class ConfigResult:
    """A whole-model perturbation (the recipe, the uniform config) on the same probe."""

    name: str
    bits_per_weight: float  # over the decoder's linear weights
    drift: ScopeDrift
    seconds: float


class Atlas:
    """Measures scopes of one live model against its recorded baseline."""

    def __init__(self, model: torch.nn.Module, probe: Probe) -> None:
        self.model = model
        self.probe = probe
        self.n_layers = int(getattr(model.config, "num_hidden_layers", 0))

    def measure(self, method: ScopedMethod, scope: AtlasScope,
                curve_bits: Sequence[int] = ()) -> ScopeResult:
        """Swap ``method``'s output into ``scope``, score, swap back; for a blockwise method
        also the weight MSE at each of ``curve_bits`` (no forward pass)."""
        from shrinktests.compression.context import StepContext
        from shrinktests.compression.mixed import weight_bits

        start = time.perf_counter()
        modules: list[tuple[str, Any]] = list(scope.scope().linear_modules(self.model))
        if not modules:
            raise AtlasError(f"scope {scope.id} selects no linear layer of this model")
        names = [n for n, _ in modules]
        params = sum(m.weight.numel() for _, m in modules)
        ctx = StepContext()
        with swapped(self.model, modules) as before:
            model = method.apply_to(self.model, modules, ctx)
            if model is not self.model:
                raise AtlasError(f"method {method.name!r} returned a new model; the atlas "
                                 "needs one that changes layers in place")
            bits = weight_bits(model, names, ctx.packed_bytes)
            mse, rel = scope_error(before, model)
            drift = self.probe.drift(model, scope.layer)
        curve = mse_curve(before, method, curve_bits) if curve_bits else {}
        return ScopeResult(scope.id, scope.layer, scope.part, len(modules), params, bits, mse,
                           rel, drift, time.perf_counter() - start, curve)

    def evaluate(self, name: str, steps: Sequence[Method]) -> ConfigResult:
        """Apply a whole config's steps to the decoder's linear layers, score, restore."""
        from shrinktests.compression.context import StepContext
        from shrinktests.compression.mixed import weight_bits

        start = time.perf_counter()
        modules: list[tuple[str, Any]] = list(Scope().linear_modules(self.model))
        names = [n for n, _ in modules]
        ctx = StepContext()
        with tempfile.TemporaryDirectory(prefix="shrinktests-atlas-") as spill, swapped(
                self.model, modules, Path(spill)):
            model = self.model
            for step in steps:
                model = step.apply(model, ctx)
            if model is not self.model:
                raise AtlasError(f"config {name!r} returned a new model; the atlas needs "
                                 "steps that change layers in place")
            bits = weight_bits(model, names, ctx.packed_bytes)
            drift = self.probe.drift(model)
        return ConfigResult(name, bits, drift, time.perf_counter() - start)

    def check_restored(self) -> float:
        """Score the restored model again: it must reproduce the recorded baseline exactly."""
        diff = self.probe.max_difference(self.model)
        if diff != 0.0:
            raise AtlasError(f"the restored model differs from the baseline (max |Δ log p| "
                             f"{diff:.3g}); the atlas results are not trustworthy")
        return diff


def describe_method(params: dict[str, Any]) -> str:
    """``method=blockwise, bits=2, block_size=32``: the parameters that were set."""
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "scope" and v is not None)


def to_dict(result: ScopeResult | ConfigResult) -> dict[str, Any]:
    """JSON-able form, with the drift's derived figures spelled out for readers of the file."""
    d = dataclasses.asdict(result)
    d["drift"].update(first_divergence=result.drift.first_divergence,
                      identical=result.drift.identical)
    return d
