"""Mixed precision: an ordered list of (scope → method) rules, first match wins.

A published mixed-precision recipe kept the first and last decoder layers and the attention
projections at 8 bits, put the middle MLPs at 4 bits and left embeddings and the LM head alone.
Here each rule is an ordinary scoped method with its own ``scope``; a tensor belongs to the
first rule whose scope selects it, so later rules only see what earlier ones left. The config
reports how many tensors each rule took and the bits per weight they ended up with.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from shrinktests.compression.base import Method, ScopedMethod
from shrinktests.compression.measure import linear_like, storage_bytes
from shrinktests.compression.registry import register
from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from shrinktests.compression.context import StepContext


def weight_bits(model: torch.nn.Module, names: list[str], packed: dict[str, int]) -> float:
    """Average bits per weight of the named linear modules as they are stored now; a low-rank
    wrapper counts its layer's weight plus its two factors."""
    modules = dict(linear_like(model))
    total_bits = total_numel = 0
    for name in names:
        module = modules[name]
        base = getattr(module, "base", module)
        w: Any = base.weight
        key = f"{name}.base.weight" if base is not module else f"{name}.weight"
        own = [p for p in module.parameters() if all(p is not q for q in base.parameters())]
        total_bits += 8 * (packed.get(key, storage_bytes(w)) + sum(map(storage_bytes, own)))
        state = getattr(w, "quant_state", None)  # bitsandbytes 4-bit: two codes per element
        total_numel += math.prod(state.shape) if state is not None else w.numel()
    return total_bits / total_numel if total_numel else 0.0


@register
@dataclass(frozen=True)
class MixedPrecision(Method):
    """Apply ``rules`` in order; each takes the linear modules of its scope no earlier rule took."""

    name: ClassVar[str] = "mixed"
    rules: tuple[ScopedMethod, ...] = ()

    def __post_init__(self) -> None:
        if not self.rules:
            raise ConfigError("rules", "give at least one rule: {method = ..., scope = {...}}")

    def params(self) -> dict[str, Any]:
        # nested methods keep their names, so two rule lists differing only in method differ
        return {"method": self.name, "rules": [r.params() for r in self.rules]}

    def with_base(self, folder: Path) -> MixedPrecision:
        rules = []
        for i, rule in enumerate(self.rules):
            try:
                rules.append(typing.cast(ScopedMethod, rule.with_base(folder)))
            except ConfigError as exc:
                raise ConfigError(f"rules[{i}].{exc.field}", exc.problem) from None
        return dataclasses.replace(self, rules=tuple(rules))

    def depends_on_cpu(self) -> bool:
        return any(r.depends_on_cpu() for r in self.rules)

    def uses_calibration(self) -> bool:
        return any(r.uses_calibration() for r in self.rules)

    def quantizes_activations(self) -> bool:
        return any(r.quantizes_activations() for r in self.rules)

    def check_environment(self) -> None:
        for rule in self.rules:
            rule.check_environment()

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        taken: set[str] = set()
        report: list[dict[str, Any]] = []
        for i, rule in enumerate(self.rules):
            modules = [(n, m) for n, m in rule.scope.linear_modules(model) if n not in taken]
            if not modules:
                raise ConfigError(f"rules[{i}].scope", "takes no tensor: nothing matches, or "
                                  "earlier rules took everything it matches")
            try:
                rule.check_float(modules)
            except ConfigError as exc:
                raise ConfigError(f"rules[{i}].{exc.field}", exc.problem) from None
            names = [n for n, _ in modules]
            params = sum(m.weight.numel() for _, m in modules)  # before: backends swap modules
            model = rule.apply_to(model, modules, ctx)
            taken.update(names)
            report.append({
                "rule": i, "method": rule.name, "tensors": len(names),
                "params": params,
                "bits_per_weight": weight_bits(model, names, ctx.packed_bytes),
            })
        untouched = [n for n, _ in linear_like(model) if n not in taken]
        all_linear = [n for n, _ in linear_like(model)]
        ctx.stats["rules"] = report
        ctx.stats["untouched_tensors"] = len(untouched)
        ctx.stats["linear_bits_per_weight"] = weight_bits(model, all_linear, ctx.packed_bytes)
        return model
