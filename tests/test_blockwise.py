"""The blockwise k-bit quantizer: exact bit packing, codebook snapping, measured sizes, scope.

Bits per weight are reported from the real packed form, and the positive-control config
("broken-2bit") relies on this quantizer actually rounding every scoped weight, so both the
packing and the snapping are checked against independent computations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shrinktests.compression.base import TensorError
from shrinktests.compression.blockwise import (
    SEED003_2BIT_LEVELS,
    BlockwiseQuant,
    Packed,
    dequantize,
    pack_codes,
    quantize,
    uniform_levels,
    unpack_codes,
)
from shrinktests.compression.context import StepContext, state_dict_lookup
from shrinktests.compression.measure import reconstruction_error, tensor_errors
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError

fast = settings(max_examples=50, deadline=None)


# --------------------------------------------------------------------------- packing


@st.composite
def codes_and_bits(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 8))
    codes = draw(st.lists(st.integers(0, 2**bits - 1), max_size=200))
    return np.asarray(codes, dtype=np.uint8), bits


@fast
@given(codes_and_bits())
def test_pack_unpack_roundtrip_is_exact(case: tuple[np.ndarray, int]) -> None:
    """Every code comes back unchanged, for every width from 1 to 8 bits."""
    codes, bits = case
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, bits, codes.size), codes)


@fast
@given(codes_and_bits())
def test_packed_size_is_the_theoretical_minimum(case: tuple[np.ndarray, int]) -> None:
    """ceil(n·bits/8) bytes: the bits-per-weight figure in reports depends on this."""
    codes, bits = case
    assert pack_codes(codes, bits).size == math.ceil(codes.size * bits / 8)


def test_pack_bit_order_worked_example() -> None:
    """Codes 1,2,3 at 2 bits → stream bits 1,0 | 0,1 | 1,1 (LSB first) → byte 0b00111001 = 57."""
    np.testing.assert_array_equal(pack_codes(np.array([1, 2, 3]), 2), [57])
    np.testing.assert_array_equal(pack_codes(np.array([255, 0]), 8), [255, 0])
    np.testing.assert_array_equal(pack_codes(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1]), 1), [1, 1])


def test_pack_and_unpack_reject_what_does_not_fit() -> None:
    """A code wider than the bit width, a width outside 1..8 or a short stream are errors."""
    with pytest.raises(ValueError, match="does not fit"):
        pack_codes(np.array([4]), 2)
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.8"):
        pack_codes(np.array([0]), 0)
    with pytest.raises(ValueError, match=r"bits must be in 1\.\.8"):
        pack_codes(np.array([0]), 9)
    with pytest.raises(ValueError, match="fewer than"):
        unpack_codes(np.zeros(1, dtype=np.uint8), 3, 3)


# --------------------------------------------------------------------------- codebooks


def test_default_two_bit_codebook_is_seed_003s() -> None:
    """(-0.75, -0.25, 0.25, 0.75) was found to beat uniform at 2 bits: it is the default."""
    assert SEED003_2BIT_LEVELS == (-0.75, -0.25, 0.25, 0.75)
    assert quantize(np.ones(4), 2, 4).levels == (-0.75, -0.25, 0.25, 0.75)
    assert quantize(np.ones(4), 3, 4).levels == uniform_levels(3)


def test_uniform_levels() -> None:
    """2^bits evenly spaced points spanning [-1, 1]; one bit is the sign alone."""
    assert uniform_levels(2) == pytest.approx((-1.0, -1 / 3, 1 / 3, 1.0))
    assert uniform_levels(1) == (-1.0, 1.0)
    assert uniform_levels(0) == (0.0,)
    for bits in range(1, 9):
        levels = np.asarray(uniform_levels(bits))
        assert levels.size == 2**bits
        assert (levels[0], levels[-1]) == (-1.0, 1.0)
        np.testing.assert_allclose(np.diff(levels), 2 / (2**bits - 1))
        np.testing.assert_allclose(levels, -levels[::-1], atol=1e-12)


# --------------------------------------------------------------------------- quantize


@st.composite
def quant_cases(draw: st.DrawFn) -> tuple[np.ndarray, int, int, tuple[float, ...] | None]:
    bits = draw(st.integers(1, 8))
    block = draw(st.integers(1, 48))
    n = draw(st.integers(1, 200))
    values = draw(
        hnp.arrays(
            np.float32, n,
            elements=st.floats(-1000, 1000, width=32, allow_subnormal=False),
        )
    )
    levels = None
    if bits <= 3 and draw(st.booleans()):
        levels = tuple(draw(st.lists(
            st.floats(-1, 1, width=32), min_size=2**bits, max_size=2**bits, unique=True,
        )))
    return values, bits, block, levels


def _block_scales(p: Packed) -> np.ndarray:
    return np.repeat(p.scales.astype(np.float32), p.block_size)[: p.numel]


@fast
@given(quant_cases())
def test_dequantized_values_are_codebook_levels_times_the_block_scale(
    case: tuple[np.ndarray, int, int, tuple[float, ...] | None],
) -> None:
    """Each weight becomes level × its block's float16 absmax scale, and nothing else."""
    values, bits, block, levels = case
    p = quantize(values, bits, block, levels)
    out = dequantize(p)
    assert out.shape == values.shape
    assert out.dtype == np.float32
    book = np.asarray(p.levels, dtype=np.float32)
    scale = _block_scales(p)
    nonzero = scale != 0
    assert np.all(out[~nonzero] == 0.0)
    ratio = out[nonzero] / scale[nonzero]
    distance = np.abs(ratio[:, None] - book[None, :]).min(axis=1)
    assert np.all(distance <= 1e-6 * np.maximum(1.0, np.abs(ratio)))


@fast
@given(quant_cases())
def test_each_value_snaps_to_the_nearest_level_and_block_error_is_bounded(
    case: tuple[np.ndarray, int, int, tuple[float, ...] | None],
) -> None:
    """Nearest-level rounding: no other level × scale is closer, and the error per block stays
    below scale × (largest distance from [-1, 1] to the codebook), plus float16 scale rounding."""
    values, bits, block, levels = case
    p = quantize(values, bits, block, levels)
    out = dequantize(p).astype(np.float64)
    x = values.astype(np.float64)
    scale = _block_scales(p).astype(np.float64)
    book = np.asarray(p.levels, dtype=np.float64)
    err = np.abs(out - x)
    best = np.abs(x[:, None] - book[None, :] * scale[:, None]).min(axis=1)
    tol = 1e-5 * np.maximum(np.abs(x), scale) + 1e-30
    assert np.all(err <= best + tol)

    gaps = np.diff(book)
    reach = max(gaps.max() / 2 if gaps.size else 0.0, 1.0 - book[-1], 1.0 + book[0])
    padded = np.zeros(-(-x.size // block) * block)
    padded[: x.size] = np.abs(x)
    absmax = padded.reshape(-1, block).max(axis=1)
    s16 = p.scales.astype(np.float64)
    bound = s16 * reach + np.maximum(absmax - s16, 0.0) + 1e-5 * absmax
    for b in range(absmax.size):
        assert err[b * block : (b + 1) * block].max() <= bound[b]


def test_zero_tensor_quantizes_to_zeros() -> None:
    """An all-zero block has scale 0 and must come back as exact zeros, not nan (0/0)."""
    p = quantize(np.zeros((4, 8)), 2, 16)
    assert np.all(p.scales == 0)
    out = dequantize(p)
    assert out.shape == (4, 8)
    assert np.all(out == 0.0)
    assert not np.isnan(out).any()


def test_quantize_worked_example_default_codebook() -> None:
    """Block [1, 0.6, -0.3, -1]: scale 1 → levels 0.75, 0.75, -0.25, -0.75."""
    p = quantize(np.array([1.0, 0.6, -0.3, -1.0]), 2, 4)
    np.testing.assert_array_equal(p.scales, np.array([1.0], dtype=np.float16))
    np.testing.assert_allclose(dequantize(p), [0.75, 0.75, -0.25, -0.75])


def test_quantize_sorts_a_given_codebook_and_validates_arguments() -> None:
    """Unsorted levels are accepted (stored sorted); wrong sizes and block 0 are rejected."""
    p = quantize(np.array([0.9, -0.9]), 1, 2, levels=(1.0, -1.0))
    assert p.levels == (-1.0, 1.0)
    np.testing.assert_allclose(dequantize(p), [0.9, -0.9], rtol=1e-3)
    with pytest.raises(ValueError, match="needs 4 levels, got 2"):
        quantize(np.ones(4), 2, 4, levels=(-1.0, 1.0))
    with pytest.raises(ValueError, match="block_size"):
        quantize(np.ones(4), 2, 0)


def test_packed_size_and_bits_per_weight() -> None:
    """64 weights at 2 bits in blocks of 32: 16 code bytes + 2 float16 scales = 20 bytes,
    i.e. 2.5 bits per weight (the scales' overhead is part of the figure)."""
    p = quantize(np.linspace(-1, 1, 64).reshape(8, 8), 2, 32)
    assert p.codes.nbytes == 16
    assert p.scales.dtype == np.float16
    assert p.scales.nbytes == 4
    assert p.nbytes == 20
    assert p.numel == 64
    assert p.bits_per_weight == pytest.approx(2.5)


@fast
@given(st.integers(1, 500), st.integers(1, 8), st.integers(1, 64))
def test_packed_nbytes_is_codes_plus_fp16_scales(n: int, bits: int, block: int) -> None:
    """nbytes = ceil(n·bits/8) + 2·ceil(n/block) and bits per weight is 8·nbytes/n."""
    p = quantize(np.arange(n, dtype=np.float32), bits, block)
    expected = math.ceil(n * bits / 8) + 2 * math.ceil(n / block)
    assert p.nbytes == p.codes.nbytes + p.scales.nbytes == expected
    assert p.bits_per_weight == pytest.approx(8 * expected / n)


def test_reconstruction_error() -> None:
    """Identical arrays have zero error; [3,4] vs [3,0]: MSE 8, max 4, relative Frobenius 0.8."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert reconstruction_error(a, a.copy()) == TensorError(0.0, 0.0, 0.0)
    assert reconstruction_error([3.0, 4.0], [3.0, 0.0]) == TensorError(8.0, 4.0, 0.8)
    assert reconstruction_error([], []) == TensorError(0.0, 0.0, 0.0)
    assert reconstruction_error([0.0], [1.0]).rel_fro == 0.0


# --------------------------------------------------------------------------- the method


def test_blockwise_method_validates_its_parameters() -> None:
    """Bad parameters fail at config load, naming the field, not deep inside apply()."""
    with pytest.raises(ConfigError) as bits0:
        BlockwiseQuant(bits=0)
    assert bits0.value.field == "bits"
    with pytest.raises(ConfigError) as bits9:
        BlockwiseQuant(bits=9)
    assert bits9.value.field == "bits"
    with pytest.raises(ConfigError) as block:
        BlockwiseQuant(block_size=0)
    assert block.value.field == "block_size"
    with pytest.raises(ConfigError) as levels:
        BlockwiseQuant(bits=2, levels=(-1.0, 1.0))
    assert levels.value.field == "levels"
    assert "needs 4 values, got 2" in str(levels.value)
    assert BlockwiseQuant(bits=1, levels=(-0.5, 0.5)).levels == (-0.5, 0.5)


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(8, 8)


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up_proj = torch.nn.Linear(8, 16)


class _Layer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = _Attention()
        self.mlp = _Mlp()


class _Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(10, 8)
        self.layers = torch.nn.ModuleList([_Layer(), _Layer()])


class _TinyLM(torch.nn.Module):
    """Module names as in a Llama-style causal LM: model.layers.N.{self_attn,mlp}.*, lm_head."""

    def __init__(self) -> None:
        super().__init__()
        self.model = _Decoder()
        self.lm_head = torch.nn.Linear(8, 10)


def _tiny_lm() -> _TinyLM:
    torch.manual_seed(0)
    return _TinyLM()


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def test_tiny_model_has_the_expected_module_names() -> None:
    """Guard for the tests below: the dotted names are the ones Scope matches against."""
    names = {n for n, m in _tiny_lm().named_modules() if isinstance(m, torch.nn.Linear)}
    assert names == {
        "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
        "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj", "lm_head",
    }


def test_blockwise_touches_only_the_scoped_linear_weight() -> None:
    """Scope(part="mlp", layers=(0,)): layer 0's up_proj weight is rounded, nothing else moves
    (not its bias, not layer 1, not attention, embeddings or the LM head)."""
    model = _tiny_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = StepContext(originals=state_dict_lookup(before))
    method = BlockwiseQuant(bits=2, block_size=32, scope=Scope(part="mlp", layers=(0,)))
    out = method.apply(model, ctx)
    assert out is model
    key = "model.layers.0.mlp.up_proj.weight"
    assert _changed(before, model) == {key}
    errors = tensor_errors(model, ctx)
    assert set(errors) == {key}
    assert set(ctx.packed_bytes) == {key}

    original = before[key].numpy()
    expected = dequantize(quantize(original, 2, 32))
    np.testing.assert_array_equal(model.state_dict()[key].numpy(), expected)
    assert errors[key] == reconstruction_error(original, expected)
    # 128 weights at 2 bits = 32 bytes of codes, plus 4 blocks × 2 bytes of scales
    assert ctx.packed_bytes[key] == 32 + 8
    assert errors[key].mse > 0


def test_blockwise_default_scope_skips_lm_head_unless_asked() -> None:
    """The full scope takes every decoder linear; the LM head (often tied) only on request."""
    model = _tiny_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = StepContext(originals=state_dict_lookup(before))
    BlockwiseQuant(bits=3).apply(model, ctx)
    decoder = {
        f"model.layers.{i}.{part}.weight"
        for i in (0, 1) for part in ("self_attn.q_proj", "mlp.up_proj")
    }
    assert _changed(before, model) == decoder
    assert set(tensor_errors(model, ctx)) == decoder

    model = _tiny_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = StepContext(originals=state_dict_lookup(before))
    BlockwiseQuant(scope=Scope(part="attention", include_lm_head=True)).apply(model, ctx)
    expected = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                "lm_head.weight"}
    assert _changed(before, model) == expected
    assert set(tensor_errors(model, ctx)) == expected
