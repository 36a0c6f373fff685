"""Size and reconstruction error of a compressed model, whatever produced it.

Every backend stores weights its own way: bitsandbytes keeps packed codes plus a quant state,
torchao and optimum-quanto use tensor subclasses with inner tensors, the blockwise quantizer
writes dequantized floats back and remembers its packed size, low-rank correction adds two
small factors. These functions see through all of them, so "bits per weight" and
"reconstruction error" mean the same thing for every config in the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shrinktests.compression.base import TensorError
from shrinktests.compression.context import StepContext

if TYPE_CHECKING:
    import torch


def reconstruction_error(original: npt.ArrayLike, approx: npt.ArrayLike) -> TensorError:
    """MSE, max |error| and relative Frobenius error of an approximation."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(approx, dtype=np.float64)
    d = a - b
    norm = float(np.linalg.norm(a))
    return TensorError(
        mse=float((d**2).mean()) if d.size else 0.0,
        max_abs=float(np.abs(d).max()) if d.size else 0.0,
        rel_fro=float(np.linalg.norm(d) / norm) if norm > 0 else 0.0,
    )


def storage_bytes(t: Any) -> int:
    """Bytes a (possibly quantized) tensor really occupies, including its scales.

    Tensor subclasses (torchao, optimum-quanto) report the *outer* float dtype, so their inner
    tensors are summed instead; bitsandbytes keeps its scales beside the packed data.
    """
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t).__name__ not in ("Parameter", "Tensor"):
        inner, _ = flatten()
        return sum(storage_bytes(getattr(t, n)) for n in inner)
    total: int = t.numel() * t.element_size()
    kind = type(t).__name__
    state = getattr(t, "quant_state", None)
    scb = getattr(t, "SCB", None)
    if kind == "Params4bit" and state is not None:
        total += _quant_state_bytes(state)
    elif kind == "Int8Params" and scb is not None:
        total += int(scb.numel() * scb.element_size())
    return total


def _quant_state_bytes(state: object) -> int:
    absmax = getattr(state, "absmax", None)
    total = 0 if absmax is None else absmax.numel() * absmax.element_size()
    nested = getattr(state, "state2", None)
    return total + (_quant_state_bytes(nested) if nested is not None else 0)


def effective_weight(module: torch.nn.Module) -> torch.Tensor:
    """The float32 weight matrix a linear-like module actually multiplies by."""
    import torch

    own = getattr(module, "effective_weight", None)
    if callable(own):
        result: torch.Tensor = own()
        return result
    w: Any = module.weight
    kind = type(w).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbf

        if getattr(w.quant_state, "packing_format_for_cpu", False):
            # bitsandbytes repacks 4-bit weights for its AVX512 CPU kernel on the first forward,
            # and its inverse is lossy: weights must be read before the model runs (see
            # keep_bnb_layout)
            raise RuntimeError("this 4-bit weight was repacked by a forward pass; "
                               "read it before running the model")
        dense: torch.Tensor = bnbf.dequantize_4bit(w.data, w.quant_state).float()
        return dense
    if kind == "Int8Params" and getattr(w, "SCB", None) is not None:
        import bitsandbytes.functional as bnbf

        dense = bnbf.int8_vectorwise_dequant(w.data, w.SCB).float()
        return dense
    qweight: Any = getattr(module, "qweight", None)  # optimum-quanto QLinear
    if qweight is not None and hasattr(qweight, "dequantize"):
        dense = qweight.dequantize().float()
    # torchao's tensor subclasses (a plain Tensor's dequantize() is for torch.quantized only)
    elif type(w) not in (torch.nn.Parameter, torch.Tensor) and hasattr(w, "dequantize"):
        dense = w.dequantize().float()
    else:
        dense = w.detach().float()
    return dense


@contextmanager
def keep_bnb_layout(model: torch.nn.Module) -> Iterator[None]:
    """Run the model without bitsandbytes repacking its 4-bit weights (see effective_weight)."""
    switched = [m for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)]
    for m in switched:
        setattr(m, "support_avx512bf16_for_cpu", False)  # noqa: B010
    try:
        yield
    finally:
        for m in switched:
            setattr(m, "support_avx512bf16_for_cpu", True)  # noqa: B010


def linear_like(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """Linear layers of any backend, outermost only (a wrapper hides the layer it wraps)."""
    import torch

    wrapped: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(w + ".") for w in wrapped):
            continue
        if callable(getattr(module, "effective_weight", None)):
            wrapped.append(name)
            yield name, module
        elif isinstance(module, torch.nn.Linear):
            yield name, module


def tensor_errors(model: torch.nn.Module, ctx: StepContext) -> dict[str, TensorError]:
    """Reconstruction error of every linear weight that differs from the original.

    Unchanged tensors are left out, so the mean error is over what the method touched. Weights
    whose original is unknown (no safetensors in the source) are left out too.
    """
    import torch

    errors: dict[str, TensorError] = {}
    with torch.no_grad():
        for name, module in linear_like(model):
            key = f"{name}.weight"
            original = ctx.original_weight(key)
            if original is None:
                continue
            approx = effective_weight(module)
            if approx.shape != original.shape or torch.equal(approx, original):
                continue
            errors[key] = reconstruction_error(original.numpy(), approx.numpy())
    return errors


def model_bytes(model: torch.nn.Module, packed: dict[str, int] | None = None) -> int:
    """Bytes of parameters and buffers, tied tensors once; ``packed`` overrides the size of
    weights kept dequantized in memory by their packed size."""
    packed = packed or {}
    seen: set[int] = set()
    total = 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        key = id(t)
        if key in seen:
            continue
        seen.add(key)
        total += packed.get(name, storage_bytes(t))
    return total
