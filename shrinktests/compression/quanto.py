"""optimum-quanto weight quantization: int8, int4 and int2.

Measured on a 2-core CPU: int8 KL 0.007, int4 KL 0.9, int2 KL 12.6 (gibberish, which makes
int2 a second positive control). quanto's int4 kernels fail under ``torch.inference_mode``;
shrinktests generates and scores under ``torch.no_grad`` everywhere, which they accept.
"""

from __future__ import annotations

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
class QuantoWeights(ScopedMethod):
    """Quantize the scoped linear weights to ``weights`` (int8 per channel; int4/int2 grouped)
    and freeze them, so the packed integers are what the model holds."""

    name: ClassVar[str] = "quanto"
    requires: ClassVar[tuple[str, ...]] = ("optimum.quanto",)
    pip_hint: ClassVar[str] = "pip install optimum-quanto==0.2.7"
    weights: Literal["int8", "int4", "int2"] = "int8"
    scope: Scope = field(default_factory=Scope)

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        from optimum.quanto import freeze, qint2, qint4, qint8, quantize

        qtype = {"int8": qint8, "int4": qint4, "int2": qint2}[self.weights]
        # include takes fnmatch patterns; exact module names match only themselves
        quantize(model, weights=qtype, include=[name for name, _ in modules])
        freeze(model)
        return model
