"""What a compression step sees besides the model: original weights, calibration inputs, and
a place to put the figures it wants reported.

Steps that need the uncompressed weights (low-rank error correction) or calibration
activations get them here instead of each re-loading the model; reconstruction error is
measured once, by :func:`shrinktests.compression.measure.tensor_errors`, against the same
originals, so it is comparable across methods and correct after composition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_LAYER = re.compile(r"(^|\.)layers\.(\d+)\.")

#: name → the original float tensor, or None where it is not known
WeightLookup = Callable[[str], "torch.Tensor | None"]


@dataclass
class StepContext:
    """Shared state of one config's steps, applied in order to one model."""

    #: method-specific figures (sparsity, layers before/after, per-rule counts) for the report
    stats: dict[str, Any] = field(default_factory=dict)
    #: parameter name → bytes in its packed form, for weights stored back dequantized
    packed_bytes: dict[str, int] = field(default_factory=dict)
    #: decoder layer i of the current model was layer ``layer_map[i]`` of the original
    layer_map: list[int] | None = None
    #: token ids of the calibration prompts, for activation-aware methods (may be empty)
    calibration: tuple[torch.Tensor, ...] = ()
    originals: WeightLookup = field(default=lambda name: None)
    #: text → token ids with the model's tokenizer (methods that read a calibration file)
    tokenize: Callable[[str], list[int]] | None = None
    #: where the model is: originals are read from disk (CPU) and moved there
    device: str = "cpu"
    #: tensors the calibrated steps computed under pinned numerics (see
    #: :mod:`shrinktests.run.portable`), by :meth:`key`: a step that finds all of
    #: its keys here takes them instead of computing them on this machine
    pinned: Mapping[str, torch.Tensor] = field(default_factory=dict)
    #: where calibrated steps put what they computed, when the pinned child process asks
    produced: dict[str, torch.Tensor] | None = None
    #: index of the step being applied, so that two steps' keys never meet
    step: int = 0
    #: where a long step says how far it is ("eora: layer 3 of 24"); shown as a status line
    progress: Callable[[str], None] = field(default=lambda text: None)

    def key(self, what: str) -> str:
        """A pinned tensor's key: the step's index and ``what`` (a module's name and part)."""
        return f"{self.step}.{what}"

    def take_pinned(self, whats: Sequence[str]) -> list[torch.Tensor] | None:
        """The pinned tensors of ``whats`` when every one of them is there, else None."""
        keys = [self.key(w) for w in whats]
        if not keys or any(k not in self.pinned for k in keys):
            return None
        return [self.pinned[k] for k in keys]

    def produce(self, what: str, tensor: torch.Tensor) -> None:
        """Keep a copy of what a calibrated step computed, if the pinned child asks for it."""
        if self.produced is not None:
            self.produced[self.key(what)] = tensor.detach().to("cpu", copy=True).contiguous()

    def original_name(self, name: str) -> str:
        """The name ``name`` had in the original model (layers renumbered after dropping)."""
        if self.layer_map is None:
            return name
        layer_map = self.layer_map

        def back(m: re.Match[str]) -> str:
            return f"{m.group(1)}layers.{layer_map[int(m.group(2))]}."
        return _LAYER.sub(back, name, count=1)

    def original_weight(self, name: str) -> torch.Tensor | None:
        """The uncompressed float32 tensor of parameter ``name`` (current naming), if known."""
        t = self.originals(self.original_name(name))
        return t if t is None or self.device == "cpu" else t.to(self.device)


def state_dict_lookup(state: Mapping[str, torch.Tensor]) -> WeightLookup:
    """Originals from an in-memory state dict (tests; a copy taken before compressing)."""
    def get(name: str) -> torch.Tensor | None:
        t = state.get(name)
        return None if t is None else t.detach().float()
    return get


def safetensors_lookup(folder: Path, tied_embeddings: bool) -> WeightLookup:
    """Originals read lazily from a model folder's safetensors files (memory-mapped).

    A folder without safetensors (e.g. only ``pytorch_model.bin``) gives no originals: the
    reconstruction error is then reported as unavailable rather than guessed.
    """
    from safetensors import safe_open

    where: dict[str, Path] = {}
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        where = {k: folder / v for k, v in weight_map.items()}
    else:
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as fh:
                where.update(dict.fromkeys(fh.keys(), f))

    def get(name: str) -> torch.Tensor | None:
        if name not in where and name == "lm_head.weight" and tied_embeddings:
            name = "model.embed_tokens.weight"
        path = where.get(name)
        if path is None:
            return None
        with safe_open(str(path), framework="pt") as fh:
            t: torch.Tensor = fh.get_tensor(name).float()
        return t
    return get
