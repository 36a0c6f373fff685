"""Low-rank error correction after quantization (EoRA-like).

For each scoped linear layer with original weight W and quantized weight Q, the error
ΔW = W − Q is approximated by a rank-r product B·A from a truncated SVD, and the layer then
computes ``Q x + B (A x)``. Plain SVD minimises ‖ΔW − BA‖ over all inputs; with
``activation_aware`` the error is first projected onto the eigenspace of the calibration
activations' covariance (EoRA's idea), so the rank is spent on the directions the layer's
inputs actually use. A published mixed-precision recipe used rank 2048 at the boundary layers
and 128 elsewhere; ranks here are capped by the matrix size and set per scope with
``overrides``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from shrinktests.compression.base import MethodUnavailable, ScopedMethod
from shrinktests.compression.layerwise import (
    ModuleT,
    capture_layer_inputs,
    full_passes,
    layer_list,
    layer_runner,
    split_by_layer,
)
from shrinktests.compression.measure import effective_weight, keep_bnb_layout
from shrinktests.compression.registry import register
from shrinktests.compression.scope import Scope
from shrinktests.core.heap import trim_heap
from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext


def input_basis(covariance: torch.Tensor, damping: float) -> torch.Tensor:
    """The lower Cholesky factor L of a damped input covariance (C = L·Lᵀ).

    ``damping`` adds that share of the mean input energy to every direction (as GPTQ does):
    a few calibration prompts leave most directions unseen, and without damping the
    correction is free to blow up along them, which generation then hits. It also keeps C
    positive definite, so the factorisation exists. Any L with L·Lᵀ = C weighs the error as
    C^½ does (‖X·L‖ = ‖X·C^½‖), and a Cholesky factor costs a tenth to a twentieth of the
    eigendecomposition this used to be: on a 4,864-wide MLP input 0.7 s against 8.4 s, on a
    8,960-wide one 3.6 s against 84 s (one thread), the bulk of EoRA's time on a model of
    0.5-1.5 billion parameters.
    """
    import torch

    c = covariance.float()  # damping bounds the conditioning; float32 halves the time
    c = c + damping * float(torch.diagonal(c).mean().clamp_min(1e-12)) * torch.eye(
        c.shape[0], dtype=c.dtype)
    factor: torch.Tensor
    factor, info = torch.linalg.cholesky_ex(c)
    if int(info) != 0:  # not positive definite in float32 (no damping): the symmetric root
        evals, evecs = torch.linalg.eigh(c)
        factor = evecs * evals.clamp_min(1e-12).sqrt()
    return factor


def low_rank_factors(
    delta: torch.Tensor, rank: int, basis: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B·A the best rank-``rank`` approximation of ``delta`` (out × in).

    With ``basis`` (L from :func:`input_basis`, L·Lᵀ the inputs' covariance C) the
    approximation minimises the error on those inputs, ‖(ΔW − BA)·L‖ = ‖(ΔW − BA)·C^½‖,
    instead of the plain Frobenius norm: the SVD runs on ΔW·L and A maps back through L⁻¹.
    """
    import torch

    rank = max(0, min(rank, *delta.shape))
    d = delta.float()
    if basis is None:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        return (u[:, :rank] * s[:rank]).float(), vh[:rank].float()
    u, s, vh = torch.linalg.svd(d @ basis, full_matrices=False)
    b = u[:, :rank] * s[:rank]
    lower = bool(torch.equal(basis, torch.tril(basis)))
    if lower:  # A = Vhᵣ·L⁻¹, a triangular solve
        a = torch.linalg.solve_triangular(basis, vh[:rank], upper=False, left=False)
    else:
        a = torch.linalg.solve(basis.T, vh[:rank].T).T
    return b.float(), a.float()


def wrap(base: torch.nn.Module, b: torch.Tensor, a: torch.Tensor) -> torch.nn.Module:
    """``base`` plus a rank-r side path ``x ↦ B (A x)``; exposes ``effective_weight()``."""
    import torch

    class LowRankLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.down = torch.nn.Linear(a.shape[1], a.shape[0], bias=False)
            self.up = torch.nn.Linear(b.shape[1], b.shape[0], bias=False)
            with torch.no_grad():
                self.down.weight.copy_(a)
                self.up.weight.copy_(b)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.base(x)
            side: torch.Tensor = self.up(self.down(x.to(self.down.weight.dtype)))
            return out + side.to(out.dtype)

        def effective_weight(self) -> torch.Tensor:
            dense: torch.Tensor = effective_weight(self.base)
            return dense + self.up.weight.float() @ self.down.weight.float()

    return LowRankLinear()


@dataclass(frozen=True)
class RankOverride:
    """A different rank for the layers of ``scope`` (first matching override wins)."""

    rank: int
    scope: Scope = field(default_factory=Scope)


@register
@dataclass(frozen=True)
class LowRankCorrection(ScopedMethod):
    """Add a rank-``rank`` SVD correction of the quantization error to each scoped layer.

    Follows a quantizer (any backend): the error is measured against the source's original
    weights, so it corrects whatever the earlier steps did, pruning included.
    """

    name: ClassVar[str] = "eora"
    rewrites_weights: ClassVar[bool] = False
    cpu_dependent: ClassVar[bool] = True
    rank: int = 16
    activation_aware: bool = True
    damping: float = 0.01
    overrides: tuple[RankOverride, ...] = ()
    scope: Scope = field(default_factory=Scope)

    def __post_init__(self) -> None:
        if not 0 < self.damping <= 10:
            raise ConfigError("damping", f"must be in (0, 10], got {self.damping}")
        for i, r in enumerate((self.rank, *(o.rank for o in self.overrides))):
            if r < 1:
                where = "rank" if i == 0 else f"overrides[{i - 1}].rank"
                raise ConfigError(where, f"must be >= 1, got {r}")

    def uses_calibration(self) -> bool:
        return self.activation_aware

    def depends_on_cpu(self) -> bool:
        """With calibration, a truncated SVD of activations this CPU computed: another CPU's
        rounding can reorder two close singular values, so the factors are pinned."""
        return self.activation_aware

    def rank_for(self, name: str, n_layers: int | None) -> int:
        for o in self.overrides:
            if o.scope.matches(name, n_layers):
                return o.rank
        return self.rank

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        import torch

        # with calibration, layer by layer: each decoder layer's inputs are recorded (on the
        # outputs of the uncorrected layers below) just before its modules are corrected, so
        # one layer's inputs are held at a time rather than the model's
        calibrated = self.activation_aware and bool(ctx.calibration)
        found = ctx.take_pinned([f"{name}.eora.{part}" for name, _ in modules
                                 for part in ("up", "down")])
        # factors computed once under pinned numerics (run.portable) need no inputs
        pinned = None if found is None else {
            name: (found[2 * i], found[2 * i + 1]) for i, (name, _) in enumerate(modules)}
        groups: Iterable[tuple[list[tuple[str, torch.nn.Linear]], CalibrationInputs | None]] = (
            CalibrationInputs.by_layer(model, modules, ctx.calibration)
            if calibrated and pinned is None else [(modules, None)])
        n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        ranks: dict[str, int] = {}
        added = 0
        activation_aware = pinned is not None and calibrated
        by_layer, rest = split_by_layer(modules)
        steps = len(by_layer) + bool(rest) if calibrated and pinned is None else 1
        with torch.no_grad():
            for done, (group, inputs) in enumerate(groups):
                if steps > 1:  # minutes on a model of a few hundred million parameters
                    ctx.progress(f"eora: layer {done + 1} of {steps}")
                activation_aware = activation_aware or bool(inputs)
                added += self._correct(model, group, inputs, ctx, n_layers, ranks, pinned)
        ctx.stats["eora"] = {
            "layers": len(ranks),
            "activation_aware": activation_aware,
            "ranks": sorted(set(ranks.values())),
            "added_params": added,
        }
        return model

    def _correct(self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]],
                 inputs: CalibrationInputs | None, ctx: StepContext, n_layers: int | None,
                 ranks: dict[str, int],
                 pinned: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> int:
        """Wrap each of ``modules`` with its correction (``pinned``'s factors, where given);
        returns the parameters added."""
        # layers fed the same input (q/k/v, gate/up) share one covariance: accumulated and
        # decomposed once when its first layer is corrected, dropped (with the inputs) after
        # its last
        bases: dict[str, torch.Tensor] = {}
        users: Counter[str] = Counter()
        if inputs:
            users.update(inputs.owner(name) for name, _ in modules if name in inputs)
        added = 0
        for name, module in modules:
            key = f"{name}.weight"
            if pinned is not None:
                b, a = pinned[name]
                added += self._wrap(model, name, module, b, a, ctx, ranks, b.shape[1])
                continue
            original = ctx.original_weight(key)
            if original is None:
                raise MethodUnavailable(
                    "eora needs the original weights, but the model folder has no "
                    "safetensors files to read them from")
            delta = original - effective_weight(module)
            rank = min(self.rank_for(name, n_layers), *delta.shape)
            basis = None
            if inputs and name in inputs:
                owner = inputs.owner(name)
                if owner not in bases:
                    bases[owner] = input_basis(inputs.covariance(owner), self.damping)
                basis = bases[owner]
                users[owner] -= 1
                if not users[owner]:
                    del bases[owner]
                    inputs.drop(owner)
            b, a = low_rank_factors(delta, rank, basis)
            added += self._wrap(model, name, module, b, a, ctx, ranks, rank)
            # the weights, differences and covariances of this layer, freed, go back to
            # the system now: left in the heap they added up to 0.8 GB over the model
            trim_heap()
        return added

    @staticmethod
    def _wrap(model: torch.nn.Module, name: str, module: torch.nn.Linear, b: torch.Tensor,
              a: torch.Tensor, ctx: StepContext, ranks: dict[str, int], rank: int) -> int:
        """Put ``module`` plus its side path B·A in its place; returns the parameters added."""
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name), leaf, wrap(module, b, a))
        ctx.produce(f"{name}.eora.up", b)
        ctx.produce(f"{name}.eora.down", a)
        key = f"{name}.weight"
        if key in ctx.packed_bytes:  # the quantized weight now lives one level down
            ctx.packed_bytes[f"{name}.base.weight"] = ctx.packed_bytes.pop(key)
        ranks[name] = rank
        return b.numel() + a.numel()


class CalibrationInputs:
    """What each scoped module read on the calibration prompts, kept to make its input
    covariance E[x xᵀ] when that module is corrected.

    Recorded one decoder layer at a time (:meth:`by_layer`): the inputs of all of
    SmolLM2-135M's 30 layers on the shipped suites' 1,729 calibration tokens are 0.65 GB in
    float32 (per token and layer: one input for q/k/v, one for o, one for gate/up, one for
    down), one layer's about 22 MB. The covariance is accumulated one prompt at a time in
    float64, as when it was summed during the forward passes, so it is the same bit for bit.

    Modules that read the very same input tensor (q/k/v, gate/up) share one record, kept under
    the first of them: the tensor each module saw is held until the next one replaces it, so
    ``is`` cannot match a freed tensor's reused memory.
    """

    def __init__(self, inputs: dict[str, list[torch.Tensor]], twin_of: dict[str, str]) -> None:
        self._inputs = inputs
        self._twin_of = twin_of

    @classmethod
    def record(cls, model: torch.nn.Module, modules: Sequence[tuple[str, torch.nn.Module]],
               calibration: Sequence[torch.Tensor]) -> CalibrationInputs:
        """Run the calibration prompts (one forward each) and keep each module's inputs."""
        return cls._record(model, modules, full_passes(model, calibration))

    @classmethod
    def by_layer(
        cls, model: torch.nn.Module, modules: Sequence[tuple[str, ModuleT]],
        calibration: Sequence[torch.Tensor],
    ) -> Iterator[tuple[list[tuple[str, ModuleT]], CalibrationInputs]]:
        """``modules`` one decoder layer at a time, each with the inputs its modules read, as
        a full forward pass of the model as it was on entry would give them (bit for bit).

        A layer's inputs are recorded when the caller asks for it, on the outputs the layers
        below gave before the caller changed them: the caller may rewrite a layer once it has
        its inputs. Modules outside decoder layers (an LM head) are recorded first, on full
        passes before anything changed, and come last.
        """
        by_layer, rest = split_by_layer(modules)
        rest_inputs = cls.record(model, rest, calibration) if rest else None
        if by_layer:
            container = next(iter(by_layer))[0]
            layers = layer_list(model, container)
            first = min(i for _, i in by_layer)
            with keep_bnb_layout(model):
                hidden, kwargs = capture_layer_inputs(model, layers, first, calibration)
            for i in range(first, 1 + max(i for _, i in by_layer)):
                run = layer_runner(layers[i], hidden, kwargs[i])
                group = by_layer.get((container, i))
                if not group:
                    with keep_bnb_layout(model):
                        hidden = run()
                    continue
                outputs: list[torch.Tensor] = []

                def run_keeping_outputs(run: Any = run, outputs: Any = outputs) -> None:
                    outputs.extend(run())

                inputs = cls._record(model, group, run_keeping_outputs)
                hidden = outputs  # taken before the caller rewrites this layer
                yield group, inputs
        if rest and rest_inputs is not None:
            yield rest, rest_inputs

    @classmethod
    def _record(cls, model: torch.nn.Module, modules: Sequence[tuple[str, torch.nn.Module]],
                run: Callable[[], object]) -> CalibrationInputs:
        """Keep the inputs ``modules`` read while ``run()`` runs the calibration prompts."""
        import torch

        inputs: dict[str, list[torch.Tensor]] = {}
        twin_of: dict[str, str] = {}  # module -> the module whose inputs it shares
        seen: dict[str, torch.Tensor] = {}  # the latest input of each module, held alive

        def hook_for(name: str) -> Any:
            def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                x = args[0]
                twin = next((n for n, t in seen.items() if t is x and n not in twin_of), None)
                seen[name] = x
                if twin is not None and twin_of.setdefault(name, twin) == twin:
                    return
                if name in twin_of:
                    raise RuntimeError(
                        f"{name} read its own input this time, not {twin_of[name]}'s")
                inputs.setdefault(name, []).append(x.detach().reshape(-1, x.shape[-1]).clone())
            return hook

        handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in modules]
        try:
            with torch.no_grad(), keep_bnb_layout(model):
                run()
        finally:
            for h in handles:
                h.remove()
        return cls(inputs, twin_of)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.owner(name) in self._inputs

    def __bool__(self) -> bool:
        return bool(self._inputs)

    def owner(self, name: str) -> str:
        """The module whose record ``name`` reads (itself unless it shares a twin's input)."""
        return self._twin_of.get(name, name)

    def covariance(self, name: str) -> torch.Tensor:
        """E[x xᵀ] of the inputs ``name`` read, summed in float64 and kept in float32, the
        precision :func:`input_basis` decomposes it in."""
        total: Any = 0
        count = 0
        for x in self._inputs[self.owner(name)]:
            flat = x.double()
            total = total + flat.T @ flat
            count += flat.shape[0]
        mean: torch.Tensor = (total / count).float()
        return mean

    def drop(self, name: str) -> None:
        """Forget the inputs ``name`` read (once its last module is corrected)."""
        self._inputs.pop(self.owner(name), None)
