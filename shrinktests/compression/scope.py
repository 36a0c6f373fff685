"""Which tensors a method touches: layer range, sub-block and name glob.

Seed 003's experiments are all "this quantizer on that part of the model" (layer 0 MLP only,
layers 0–1 attention only, …); a scope is that "that part" as data. Embeddings and the
LM head are never selected unless ``include_embeddings`` / ``include_lm_head`` say so, because
tied embeddings make them the same tensor in many small models.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Scope:
    """Selects linear modules by decoder layer index, sub-block and an optional name glob."""

    part: Literal["full", "attention", "mlp"] = "full"
    layers: tuple[int, ...] | None = None
    include: str | None = None
    include_lm_head: bool = False

    def matches(self, name: str) -> bool:
        """Whether the linear module called ``name`` (e.g. ``model.layers.3.mlp.up_proj``) is in."""
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("lm_head"):
            return self.include_lm_head
        m = _LAYER.search(name)
        if m is None:
            return False
        if self.layers is not None and int(m.group(1)) not in self.layers:
            return False
        if self.part == "attention" and leaf not in ATTENTION:
            return False
        if self.part == "mlp" and leaf not in MLP:
            return False
        return self.include is None or fnmatch.fnmatchcase(name, self.include)

    def linear_modules(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
        """The selected ``nn.Linear`` modules of ``model``, in module order."""
        import torch

        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and self.matches(name):
                yield name, module
