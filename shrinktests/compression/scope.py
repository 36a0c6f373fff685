"""Which tensors a method touches: layer range, sub-block and name glob.

Partial-quantization experiments are all "this quantizer on that part of the model" (layer 0
MLP only, layers 0–1 attention only, …); a scope is that "that part" as data. Embeddings and
the LM head are never selected unless ``include_embeddings`` / ``include_lm_head`` say so,
because tied embeddings make them the same tensor in many small models.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shrinktests.core.schema import ConfigError

if TYPE_CHECKING:
    import torch

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def parse_layers(spec: tuple[int, ...] | str, n_layers: int | None) -> frozenset[int]:
    """Layer indices from a list (negatives count from the end) or a string of comma-separated
    indices and Python-style slices: ``"0,-1"`` (first and last), ``"1:-1"`` (all but those),
    ``"10:20"``. Slices and negative indices need ``n_layers``."""
    items: list[int | slice] = []
    if isinstance(spec, str):
        for part in (p.strip() for p in spec.split(",")):
            try:
                if ":" in part:
                    lo, _, hi = part.partition(":")
                    items.append(slice(int(lo) if lo.strip() else None,
                                       int(hi) if hi.strip() else None))
                else:
                    items.append(int(part))
            except ValueError:
                raise ValueError(f"layers {spec!r}: {part!r} is not an index or a:b") from None
    else:
        items = list(spec)
    needs_count = any(isinstance(i, slice) or i < 0 for i in items)
    if n_layers is None:
        if needs_count:
            raise ValueError(f"layers {spec!r}: slices and negative indices need the layer count")
        return frozenset(i for i in items if isinstance(i, int))
    out: set[int] = set()
    for i in items:
        if isinstance(i, slice):
            out.update(range(n_layers)[i])
        elif -n_layers <= i < n_layers:
            out.add(i % n_layers)
    return frozenset(out)


@dataclass(frozen=True)
class Scope:
    """Selects linear modules by decoder layer index, sub-block and an optional name glob."""

    part: Literal["full", "attention", "mlp"] = "full"
    layers: tuple[int, ...] | str | None = None
    include: str | None = None
    include_lm_head: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            try:  # syntax check when the config is read, not at compression time
                parse_layers(self.layers, 1_000_000)
            except ValueError as exc:
                raise ConfigError("layers", str(exc)) from None

    def matches(self, name: str, n_layers: int | None = None) -> bool:
        """Whether the linear module called ``name`` (e.g. ``model.layers.3.mlp.up_proj``) is in.

        ``n_layers`` resolves negative indices and slices in ``layers``.
        """
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("lm_head"):
            return self.include_lm_head
        m = _LAYER.search(name)
        if m is None:
            return False
        if self.layers is not None and int(m.group(1)) not in parse_layers(self.layers, n_layers):
            return False
        if self.part == "attention" and leaf not in ATTENTION:
            return False
        if self.part == "mlp" and leaf not in MLP:
            return False
        return self.include is None or fnmatch.fnmatchcase(name, self.include)

    def linear_modules(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
        """The selected ``nn.Linear`` modules of ``model``, in module order."""
        import torch

        n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and self.matches(name, n_layers):
                yield name, module
