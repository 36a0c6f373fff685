"""torchao int8 weight-only and int8 dynamic-activation quantization.

Both work on CPU with torchao 0.18 (measured on 2 cores: KL 0.007 weight-only, 0.10 dynamic on
SmolLM2-135M). torchao's int4 weight-only config needs CUDA kernels and is not offered. The
weights become torchao tensor subclasses; :mod:`shrinktests.compression.measure` reads their
inner int8 data and scales for bytes and dequantizes them for reconstruction error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

from shrinktests.compression.base import ScopedMethod
from shrinktests.compression.registry import register
from shrinktests.compression.scope import Scope

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext


@register
@dataclass(frozen=True)
class TorchaoInt8(ScopedMethod):
    """int8 weights per output channel; ``activations = "dynamic"`` also quantizes activations
    to int8 per token at run time (W8A8), "none" keeps them in float (W8A16)."""

    name: ClassVar[str] = "torchao-int8"
    requires: ClassVar[tuple[str, ...]] = ("torchao",)
    pip_hint: ClassVar[str] = "pip install torchao==0.18.0"
    activations: Literal["none", "dynamic"] = "none"
    scope: Scope = field(default_factory=Scope)

    def quantizes_activations(self) -> bool:
        return self.activations == "dynamic"

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        # torchao logs an error per optional CUDA extension it cannot load; they are not used here
        logging.getLogger("torchao").setLevel(logging.CRITICAL)
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        config = (Int8DynamicActivationInt8WeightConfig() if self.activations == "dynamic"
                  else Int8WeightOnlyConfig())
        wanted = {name for name, _ in modules}
        quantize_(model, config, filter_fn=lambda _module, fqn: fqn in wanted)
        return model
