"""The ``gguf`` method: llama.cpp's weight types, rounded by the ``gguf`` package itself.

The values must be exactly what ``gguf`` writes and reads back, the packed size what it
writes, the scope respected, the ternary types' fallback llama-quantize's, and types the
package can only read a config error that points at the ``gguf = ...`` candidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shrinktests.compression.context import StepContext
from shrinktests.compression.llamacpp import dequantize_only_types, quantizable_types
from shrinktests.compression.measure import model_bytes
from shrinktests.compression.registry import build_method
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError
from tests.test_prune import tiny_llama

#: the types the method is asked to write (the package's quantizers, as of gguf 0.19)
WRITES = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4", "TQ2_0", "TQ1_0", "BF16")


def _linear(weight: np.ndarray) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
    return layer


def test_the_types_it_writes_are_the_ones_the_package_can_quantize() -> None:
    assert set(quantizable_types()) == set(WRITES)
    assert {"Q4_K", "Q6_K", "IQ4_XS"} <= set(dequantize_only_types())


@settings(max_examples=40, deadline=None)
@given(qtype=st.sampled_from(WRITES), rows=st.integers(1, 4), blocks=st.integers(1, 3),
       data=st.data())
def test_weights_are_what_gguf_writes_and_reads_back(qtype: str, rows: int, blocks: int,
                                                     data: st.DataObject) -> None:
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    columns = max(block, 256) * blocks  # a multiple of every block size (TQ: 256)
    w = data.draw(arrays(np.float32, (rows, columns),
                         elements=st.floats(-4, 4, width=32, allow_subnormal=False)))
    model = torch.nn.Sequential()
    model.add_module("layers", torch.nn.ModuleList([torch.nn.Module()]))
    layer = _linear(w)
    model.layers[0].add_module("proj", layer)
    ctx = StepContext()
    build_method({"method": "gguf", "type": qtype}).apply_to(
        model, [("layers.0.proj", layer)], ctx)
    qt = GGMLQuantizationType[qtype]
    expected = quants.dequantize(quants.quantize(w, qt), qt)
    np.testing.assert_array_equal(layer.weight.detach().numpy(), expected)
    # the packed size is gguf's: type_size bytes per block of `block` values
    assert ctx.packed_bytes["layers.0.proj.weight"] == rows * columns // block * type_size
    assert ctx.stats["gguf"] == {qtype: 1}


@pytest.mark.parametrize(("qtype", "bits"), [
    ("Q8_0", 8.5), ("Q5_1", 6.0), ("Q5_0", 5.5), ("Q4_1", 5.0), ("Q4_0", 4.5),
    ("MXFP4", 4.25), ("BF16", 16.0),
])
def test_bits_per_weight_are_the_packed_size(qtype: str, bits: float) -> None:
    model = tiny_llama(2)  # rows of 32 and 64 values: whole blocks of 32
    ctx = StepContext()
    build_method({"method": "gguf", "type": qtype}).apply(model, ctx)
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
              and "layers." in n}
    numel = sum(m.weight.numel() for m in linear.values())
    packed = sum(ctx.packed_bytes[f"{n}.weight"] for n in linear)
    assert 8 * packed / numel == pytest.approx(bits)
    # and the model's size counts the packed bytes, not the dequantized floats
    assert model_bytes(model, ctx.packed_bytes) < model_bytes(tiny_llama(2), {})


def test_only_the_scope_is_rounded() -> None:
    model, before = tiny_llama(3), tiny_llama(3).state_dict()
    ctx = StepContext()
    build_method({"method": "gguf", "type": "Q4_0",
                  "scope": {"part": "mlp", "layers": [1]}}).apply(model, ctx)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"model.layers.1.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    assert set(ctx.packed_bytes) == changed


def test_ternary_types_fall_back_to_q4_0_where_rows_do_not_fit_as_llama_quantize_does() -> None:
    model = torch.nn.Sequential()
    model.add_module("layers", torch.nn.ModuleList([torch.nn.Module()]))
    rng = np.random.default_rng(0)
    fits = _linear(rng.standard_normal((4, 512), dtype=np.float32))
    short = _linear(rng.standard_normal((4, 96), dtype=np.float32))  # not a multiple of 256
    model.layers[0].add_module("a", fits)
    model.layers[0].add_module("b", short)
    ctx = StepContext()
    build_method({"method": "gguf", "type": "TQ2_0"}).apply_to(
        model, [("layers.0.a", fits), ("layers.0.b", short)], ctx)
    assert ctx.stats["gguf"]["TQ2_0"] == 1 and ctx.stats["gguf"]["Q4_0"] == 1
    assert "as llama-quantize does" in ctx.stats["gguf"]["fallback"]
    assert ctx.packed_bytes["layers.0.b.weight"] == 4 * 96 // 32 * 18  # Q4_0's layout


def test_a_row_no_type_fits_is_a_config_error_naming_the_tensor() -> None:
    layer = _linear(np.ones((2, 48), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"x\.proj has rows of 48 values, not a multiple of "
                                          r"Q4_0's block of 32"):
        build_method({"method": "gguf", "type": "Q4_0"}).apply_to(
            torch.nn.Module(), [("x.proj", layer)], StepContext())


@pytest.mark.parametrize(("qtype", "message"), [
    ("Q4_K", r"can read this type but not write it.*llama-quantize.*"
             r"gguf = \"model-Q4_K\.gguf\".*Q8_0"),
    ("iq4_xs", r"can read this type but not write it.*model-IQ4_XS"),
    ("q4_0", r"upper case: 'Q4_0'"),
    ("Q4_2", r"unknown GGML type 'Q4_2' \(did you mean 'Q4_1'\?\); known: BF16, Q4_0"),
])
def test_types_it_cannot_write_are_config_errors(qtype: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_method({"method": "gguf", "type": qtype})
    assert info.value.field == "type"


def test_scope_errors_and_unknown_parameters_name_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_method({"method": "gguf", "type": "Q4_0", "bits": 4})
    method = build_method({"method": "gguf", "scope": {"part": "mlp"}})
    assert method.params()["scope"] == Scope(part="mlp").__dict__ | {"layers": None}
