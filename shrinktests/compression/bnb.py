"""bitsandbytes quantization through transformers' load-time quantizer (4-bit NF4/FP4, LLM.int8).

Published bf16/8-bit/NF4 comparisons ran on a GPU; on a CPU-only machine bitsandbytes 0.50 runs
both through its CPU backend (measured on a 2-core CPU: nf4 22 tok/s, 8-bit 12 tok/s on
SmolLM2-135M). It logs a warning about the optional ``kernels`` package: do not install that,
it downloads from a model hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from shrinktests.compression.base import Method
from shrinktests.compression.registry import register

_PIP = "pip install bitsandbytes==0.50.2"


@register
@dataclass(frozen=True)
class Bnb4bit(Method):
    """bitsandbytes 4-bit weights (``quant_type`` nf4 or fp4), dequantized per matmul."""

    name: ClassVar[str] = "bnb-4bit"
    requires: ClassVar[tuple[str, ...]] = ("bitsandbytes",)
    pip_hint: ClassVar[str] = _PIP
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = False
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def load_kwargs(self) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=self.quant_type,
                bnb_4bit_use_double_quant=self.double_quant,
                bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype),
            )
        }


@register
@dataclass(frozen=True)
class Bnb8bit(Method):
    """bitsandbytes LLM.int8: int8 weights, outlier features above ``threshold`` kept in fp."""

    name: ClassVar[str] = "bnb-8bit"
    requires: ClassVar[tuple[str, ...]] = ("bitsandbytes",)
    pip_hint: ClassVar[str] = _PIP
    threshold: float = 6.0
    skip_modules: tuple[str, ...] = ()

    def quantizes_activations(self) -> bool:
        return True  # the int8 matmul of the non-outlier columns

    def load_kwargs(self) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_8bit=True,
                llm_int8_threshold=self.threshold,
                llm_int8_skip_modules=list(self.skip_modules) or None,
            )
        }
