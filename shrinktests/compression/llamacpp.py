"""llama.cpp's weight types (``method = "gguf"``), rounded by the ``gguf`` package's reference
quantizers.

Each scoped linear weight is quantized row by row to the GGML type, exactly as ``gguf``'s
``quants.quantize`` writes it into a GGUF file, then dequantized back with ``quants.dequantize``
into the float model. Bits per weight count the packed bytes (``Q4_0``: 18 bytes per block of
32 = 4.5 bits). So a config shows what llama.cpp's rounding of that type does to behaviour on
this model, without llama.cpp's runtime (its kernels, its activation rounding).

The ``gguf`` package can quantize only some types (the legacy ``Q*_0``/``Q*_1``, ``MXFP4``, the
ternary ``TQ*`` and ``BF16``); the K-quants and the IQ types it can only dequantize. A file of
such a type, made by ``llama-quantize``, is tested as a ``gguf = "model.gguf"`` candidate.

Row lengths that are not a multiple of the type's block fall back the way ``llama-quantize``
falls back: the ternary types (blocks of 256) to ``Q4_0``. The report counts such tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shrinktests.compression.base import ScopedMethod
from shrinktests.compression.registry import register
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError, nearest_name

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from shrinktests.compression.context import StepContext

#: the type ``llama-quantize`` uses for a tensor whose rows do not fit the asked type's block
FALLBACK = {"TQ1_0": "Q4_0", "TQ2_0": "Q4_0"}


@cache
def quantizable_types() -> tuple[str, ...]:
    """GGML types the installed ``gguf`` package can quantize (its class defines
    ``quantize_blocks``), in the package's order."""
    from gguf import quants

    def own(cls: type) -> object:  # the class in the MRO that defines quantize_blocks
        return next(k for k in cls.__mro__ if "quantize_blocks" in vars(k))

    base = own(vars(quants)["__Quant"])
    return tuple(t.name for t, cls in quants._type_traits.items() if own(cls) is not base)


@cache
def dequantize_only_types() -> tuple[str, ...]:
    """GGML types ``gguf`` can read but not write (K-quants, IQ types)."""
    from gguf import quants

    return tuple(t.name for t in quants._type_traits if t.name not in quantizable_types())


def block_size(qtype: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return int(GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][0])


def type_for(qtype: str, row_length: int) -> str | None:
    """The type a row of ``row_length`` values is stored in: ``qtype``, its fallback, or None
    when neither fits."""
    for candidate in (qtype, FALLBACK.get(qtype)):
        if candidate is not None and row_length % block_size(candidate) == 0:
            return candidate
    return None


def quantize(values: npt.NDArray[np.float32], qtype: str) -> npt.NDArray[np.uint8]:
    """The bytes ``gguf`` writes for a 2-D float32 array in ``qtype`` (rows × packed bytes)."""
    from gguf import GGMLQuantizationType, quants

    packed: npt.NDArray[np.uint8] = quants.quantize(values, GGMLQuantizationType[qtype])
    return packed


def dequantize(packed: npt.NDArray[np.uint8], qtype: str) -> npt.NDArray[np.float32]:
    from gguf import GGMLQuantizationType, quants

    values: npt.NDArray[np.float32] = quants.dequantize(packed, GGMLQuantizationType[qtype])
    return values


@register
@dataclass(frozen=True)
class GgufQuant(ScopedMethod):
    """Round the scoped linear weights to a llama.cpp type (``type = "Q4_0"``)."""

    name: ClassVar[str] = "gguf"
    requires: ClassVar[tuple[str, ...]] = ("gguf",)
    pip_hint: ClassVar[str] = "pip install gguf"
    type: str = "Q4_0"
    scope: Scope = field(default_factory=Scope)

    def __post_init__(self) -> None:
        known = quantizable_types()
        if self.type in known:
            return
        upper = self.type.upper()
        if upper in known:
            raise ConfigError("type", f"{self.type!r}: GGML type names are upper case: {upper!r}")
        if upper in dequantize_only_types():
            raise ConfigError(
                "type", f"{self.type!r}: the gguf package can read this type but not write it; "
                f"make the file with llama.cpp's llama-quantize and test it as a candidate "
                f"config: gguf = \"model-{upper}.gguf\" (types this method writes: "
                f"{', '.join(known)})")
        raise ConfigError("type", f"unknown GGML type {self.type!r}"
                          f"{nearest_name(upper, known)}; known: {', '.join(known)}")

    def apply_to(
        self, model: torch.nn.Module, modules: list[tuple[str, torch.nn.Linear]], ctx: StepContext
    ) -> torch.nn.Module:
        import torch

        stored: dict[str, int] = {}
        with torch.no_grad():
            for name, module in modules:
                w = module.weight
                qtype = type_for(self.type, w.shape[-1])
                if qtype is None:
                    raise ConfigError("type", f"{name} has rows of {w.shape[-1]} values, not a "
                                      f"multiple of {self.type}'s block of {block_size(self.type)}")
                packed = quantize(w.detach().float().cpu().numpy(), qtype)
                ctx.packed_bytes[f"{name}.weight"] = int(packed.nbytes)
                w.copy_(torch.from_numpy(dequantize(packed, qtype)).to(w.dtype))
                stored[qtype] = stored.get(qtype, 0) + 1
        details: dict[str, Any] = ctx.stats.setdefault("gguf", {})
        for qtype, count in stored.items():
            details[qtype] = details.get(qtype, 0) + count
        if set(stored) - {self.type}:
            details["fallback"] = (f"rows not a multiple of {block_size(self.type)} "
                                   f"stored as {FALLBACK[self.type]}, as llama-quantize does")
        return model


def write_gguf(step: GgufQuant, source_gguf: Path, model_folder: Path, out: Path) -> None:
    """Write the weights this step gives as a real GGUF file, the one llama.cpp would load.

    Every tensor the step's scope selects is read from ``source_gguf``, dequantized and rounded
    to the step's type by the same ``gguf`` quantizers the step uses; every other tensor
    (embeddings, norms, a layer out of scope) and all metadata, tokenizer included, are copied
    as they are. Rounding works on rows, and the file keeps llama.cpp's row order (the query
    and key rows are permuted against transformers'), so each rounded row holds the numbers
    the step gives the transformers model. ``model_folder`` (the source in transformers
    form) names the scoped modules; they are mapped to GGUF names by ``gguf``'s own table.
    """
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_folder, trust_remote_code=False)
    with torch.device("meta"):  # names only: no memory, no weights read
        meta = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    reader = gguf.GGUFReader(source_gguf)
    arch_name = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    names = gguf.get_tensor_name_map(arch, int(config.num_hidden_layers))
    targets: dict[str, str] = {}
    for name, _ in step.scope.linear_modules(meta):
        mapped = names.get_name(f"{name}.weight", try_suffixes=(".weight",))
        if mapped is None:
            raise ConfigError("scope", f"{name} has no tensor in {source_gguf.name}")
        targets[mapped] = name
    tensors: list[tuple[str, Any, Any]] = []
    for tensor in reader.tensors:
        data, raw = tensor.data, tensor.tensor_type
        if tensor.name in targets:
            values = dequantize(tensor.data, tensor.tensor_type.name)
            qtype = type_for(step.type, values.shape[-1])
            if qtype is None:
                raise ConfigError("type", f"{targets[tensor.name]} has rows of "
                                  f"{values.shape[-1]} values, not a multiple of {step.type}'s "
                                  f"block of {block_size(step.type)}")
            data, raw = quantize(values, qtype), gguf.GGMLQuantizationType[qtype]
        tensors.append((tensor.name, data, raw))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # renamed into place when whole
    try:
        writer = gguf.GGUFWriter(tmp, arch_name, endianess=reader.endianess)
        for fld in reader.fields.values():
            if fld.name == gguf.Keys.General.ARCHITECTURE or fld.name.startswith("GGUF."):
                continue
            kind = fld.types[0]
            sub = fld.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(fld.name, fld.contents(), kind, sub_type=sub)
        for name, data, raw in tensors:
            writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, data, _ in tensors:
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
