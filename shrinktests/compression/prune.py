"""Pruning: drop whole decoder layers (depth) or zero small weights (unstructured).

Cutting a 4B model from 36 decoder layers to 10 (65.48% fewer parameters) turned its output
into nonsense; pruning an 8B model's unstructured weights at rising ratios turned fluency into
loops, token soup and finally silence. Both are here so the same checks can show that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from shrinktests.compression.base import Method, ScopedMethod
from shrinktests.compression.registry import register
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    import torch

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError("layers", f"{type(model).__name__} has no model.layers list to prune")
    return layers


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@register
@dataclass(frozen=True)
class DropLayers(Method):
    """Remove decoder layers by index (``layers``) or keep only every ``keep_every``-th one."""

    name: ClassVar[str] = "drop-layers"
    layers: tuple[int, ...] = ()
    keep_every: int = 0

    def __post_init__(self) -> None:
        if bool(self.layers) == bool(self.keep_every):
            raise ConfigError("layers", "give either layers = [indices to drop] or keep_every = N")
        if self.keep_every < 0:
            raise ConfigError("keep_every", f"must be >= 1, got {self.keep_every}")

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        import torch

        layers = _decoder_layers(model)
        n = len(layers)
        if self.layers:
            bad = [i for i in self.layers if not 0 <= i < n]
            if bad:
                raise ConfigError("layers", f"indices {bad} out of range for {n} layers")
            drop = set(self.layers)
        else:
            drop = {i for i in range(n) if i % self.keep_every != 0}
        if len(drop) >= n:
            raise ConfigError("layers", f"would drop all {n} layers")
        before = _param_count(model)
        kept = [layer for i, layer in enumerate(layers) if i not in drop]
        for new_index, layer in enumerate(kept):
            # the KV cache is indexed by each attention's layer_idx: renumber the survivors
            attn = getattr(layer, "self_attn", None)
            if attn is not None and hasattr(attn, "layer_idx"):
                attn.layer_idx = new_index
        model.model.layers = torch.nn.ModuleList(kept)  # type: ignore[union-attr]
        config: Any = model.config
        config.num_hidden_layers = len(kept)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == n:
            config.layer_types = [t for i, t in enumerate(layer_types) if i not in drop]
        after = _param_count(model)
        # later steps and the reconstruction error still find each survivor's original weights
        old = ctx.layer_map or list(range(n))
        ctx.layer_map = [old[i] for i in range(n) if i not in drop]
        ctx.stats["pruning"] = {
            "layers_before": n, "layers_after": len(kept),
            "params_before": before, "params_after": after,
            "param_reduction_pct": 100 * (before - after) / before,
            "layer_reduction_pct": 100 * len(drop) / n,
        }
        return model


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """Boolean keep-mask zeroing the smallest-|w| share ``sparsity`` of ``weight``.

    ``pattern="2:4"`` zeroes the 2 smallest of every 4 consecutive weights along the input
    dimension (NVIDIA's semi-structured sparsity; ``sparsity`` is then fixed at 50%).
    """
    import torch

    w = weight.detach().abs()
    if pattern == "2:4":
        if w.shape[-1] % 4:
            raise ConfigError("pattern", f"2:4 needs the input dimension divisible by 4, "
                              f"got {tuple(w.shape)}")
        groups = w.reshape(-1, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, groups.topk(2, dim=1).indices, True)
        return keep.reshape(w.shape)
    k = round(sparsity * w.numel())
    if k == 0:
        return torch.ones_like(w, dtype=torch.bool)
    threshold = w.flatten().kthvalue(k).values
    return w > threshold


@register
@dataclass(frozen=True)
class MagnitudePrune(ScopedMethod):
    """Zero the smallest weights of the scoped linear layers (unstructured or 2:4)."""

    name: ClassVar[str] = "magnitude-prune"
    sparsity: float = 0.5
    pattern: Literal["unstructured", "2:4"] = "unstructured"
    granularity: Literal["per-tensor", "global"] = "per-tensor"
    scope: Scope = field(default_factory=Scope)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError("sparsity", f"must be in [0, 1), got {self.sparsity}")
        if self.pattern == "2:4" and self.granularity == "global":
            raise ConfigError("granularity", "2:4 sparsity is per group of four, not global")

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        import torch

        global_threshold = None
        if self.granularity == "global":
            everything = torch.cat([m.weight.detach().abs().flatten() for _, m in modules])
            k = round(self.sparsity * everything.numel())
            global_threshold = everything.kthvalue(k).values if k else None
        zeros = total = 0
        with torch.no_grad():
            for _, module in modules:
                w = module.weight
                if global_threshold is not None:
                    keep = w.detach().abs() > global_threshold
                else:
                    keep = magnitude_mask(w, self.sparsity, self.pattern)
                w.mul_(keep.to(w.dtype))
                zeros += int((~keep).sum())
                total += keep.numel()
        ctx.stats["sparsity"] = zeros / total if total else 0.0
        return model
