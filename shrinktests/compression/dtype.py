"""Plain dtype casts: fp32, bf16, fp16, or ``auto``: the model folder's own dtype.

``auto`` is what a reference should be: the model as its authors ship it. Models are trained
and published in bfloat16; judging a bf16 model's compressed versions against a float32 copy
of it doubles the memory of the gate and compares with a model nobody ships. The run resolves
``auto`` to a concrete dtype (from the folder's ``config.json``) before anything is
fingerprinted, so ``auto`` on a float32 folder is the same config as ``float32``.
"""

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
    dtype: Literal["float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto"] = "float32"

    def for_model(self, model_dtype: str) -> DtypeCast:
        """This cast with ``auto`` replaced by the model's own dtype (a name of DTYPES)."""
        if self.dtype != "auto":
            return self
        return DtypeCast(dtype=DTYPES.get(model_dtype, "float32"))  # type: ignore[arg-type]

    def apply(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        import torch

        if self.dtype == "auto":
            raise RuntimeError("dtype 'auto' is resolved against the model folder before a "
                               "config is built (ConfigSet.for_model_dtype)")
        return model.to(getattr(torch, DTYPES[self.dtype]))
