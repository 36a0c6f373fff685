"""Plain dtype casts: fp32 (the reference), bf16, fp16."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from shrinktests.compression.base import Method
from shrinktests.compression.registry import register

if TYPE_CHECKING:
    import torch

    from shrinktests.compression.context import StepContext

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@register
@dataclass(frozen=True)
class DtypeCast(Method):
    """Cast every floating-point parameter to ``dtype``; embeddings included."""

    name: ClassVar[str] = "dtype"
    dtype: Literal["float32", "fp32", "bfloat16", "bf16", "float16", "fp16"] = "float32"

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        import torch

        return model.to(getattr(torch, DTYPES[self.dtype]))
