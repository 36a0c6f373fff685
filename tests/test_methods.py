"""Scopes with layer ranges, mixed-precision rules, and the torchao / optimum-quanto backends,
on a tiny Llama built from a config (no download). Size and error go through the same
measuring code the report uses."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.compression.base import Method, MethodUnavailable
from shrinktests.compression.context import StepContext, state_dict_lookup
from shrinktests.compression.measure import (
    effective_weight,
    linear_like,
    model_bytes,
    storage_bytes,
    tensor_errors,
)
from shrinktests.compression.mixed import MixedPrecision
from shrinktests.compression.registry import build_method
from shrinktests.compression.scope import Scope, parse_layers
from shrinktests.core.schema import ConfigError
from tests.test_prune import tiny_llama


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), lo=st.integers(-45, 45) | st.none(),
       hi=st.integers(-45, 45) | st.none(), i=st.integers(-45, 45))
def test_layer_strings_follow_python_slicing(n: int, lo: int | None, hi: int | None,
                                             i: int) -> None:
    text = f"{'' if lo is None else lo}:{'' if hi is None else hi}"
    assert parse_layers(text, n) == frozenset(range(n)[lo:hi])
    expected = {i % n} if -n <= i < n else set()
    assert parse_layers(f"{i}", n) == expected
    assert parse_layers((i,), n) == expected


def test_layer_spec_errors_are_config_errors() -> None:
    assert parse_layers("0,-1", 30) == {0, 29}
    assert parse_layers("1:-1", 4) == {1, 2}
    with pytest.raises(ConfigError, match=r"layers: .*'x' is not an index"):
        Scope(layers="0,x")
    with pytest.raises(ConfigError, match=r"scope\.layers"):
        build_method({"method": "blockwise", "scope": {"layers": "1:two"}})
    with pytest.raises(ValueError, match="need the layer count"):
        parse_layers("-1", None)


def test_scope_resolves_negative_layers_against_the_model() -> None:
    names = [n for n, _ in Scope(part="attention", layers="-1").linear_modules(tiny_llama(3))]
    assert names == [f"model.layers.2.self_attn.{p}_proj" for p in "qkvo"]


def _quantized(method: dict[str, Any], layers: int = 2) -> tuple[torch.nn.Module, StepContext]:
    model = tiny_llama(layers)
    ctx = StepContext(originals=state_dict_lookup({k: v.clone()
                                                   for k, v in model.state_dict().items()}))
    return build_method(method).apply(model, ctx), ctx


@pytest.mark.parametrize(("spec", "max_bits", "max_err"), [
    ({"method": "torchao-int8"}, 9.5, 0.02),
    ({"method": "torchao-int8", "activations": "dynamic"}, 9.5, 0.02),
    ({"method": "quanto", "weights": "int8"}, 9.5, 0.02),
    # groups span the tiny 32-wide rows, so the float scale and shift per group weigh more
    ({"method": "quanto", "weights": "int4"}, 6.5, 0.2),
    ({"method": "quanto", "weights": "int2"}, 4.5, 0.8),
])
def test_backend_quantizers_shrink_weights_and_report_their_error(
    spec: dict[str, Any], max_bits: float, max_err: float
) -> None:
    """Every decoder linear is stored at about the promised width (inner data plus scales),
    the reconstruction error is small but non-zero, and the model still generates."""
    fp32 = model_bytes(tiny_llama(2))
    model, ctx = _quantized(spec)
    errors = tensor_errors(model, ctx)
    decoder = {f"{n}.weight" for n, _ in linear_like(model) if n != "lm_head"}
    assert set(errors) == decoder  # the (tied) LM head is outside the default scope
    assert all(0 < e.rel_fro < max_err for e in errors.values())
    for name, module in linear_like(model):
        if name != "lm_head":
            assert 8 * storage_bytes(module.weight) / module.weight.numel() <= max_bits
    assert model_bytes(model) < fp32
    with torch.no_grad():
        out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_mixed_rules_first_match_wins_and_report_counts_and_bits() -> None:
    model, ctx = _quantized({"method": "mixed", "rules": [
        {"method": "torchao-int8", "scope": {"layers": "0,-1"}},
        {"method": "blockwise", "bits": 4, "block_size": 16, "scope": {"part": "mlp"}},
        {"method": "blockwise", "bits": 2, "block_size": 16},
    ]}, layers=4)
    rules = ctx.stats["rules"]
    # layers 0 and 3 whole (7 linears each); the MLPs of 1 and 2; their attention
    assert [r["tensors"] for r in rules] == [14, 6, 8]
    assert [r["method"] for r in rules] == ["torchao-int8", "blockwise", "blockwise"]
    bits = [r["bits_per_weight"] for r in rules]
    assert 8 < bits[0] < 9.5 and 4 < bits[1] < 5.5 and 2 < bits[2] < 3.5
    assert ctx.stats["untouched_tensors"] == 1  # the LM head
    assert 2 < ctx.stats["linear_bits_per_weight"] < 32
    assert len(tensor_errors(model, ctx)) == 28


def test_mixed_rule_errors_name_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"rules\[1\]\.bits"):
        build_method({"method": "mixed", "rules": [{"method": "quanto"},
                                                   {"method": "blockwise", "bits": 12}]})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.method: 'drop-layers' cannot be used"):
        build_method({"method": "mixed", "rules": [{"method": "drop-layers", "layers": [1]}]})
    with pytest.raises(ConfigError, match=r"rules\[1\]\.scope: takes no tensor"):
        _quantized({"method": "mixed", "rules": [{"method": "quanto"},
                                                 {"method": "quanto", "scope": {"part": "mlp"}}]})
    with pytest.raises(ConfigError, match="rules"):
        MixedPrecision()


def test_rewriting_a_quantized_weight_is_refused() -> None:
    """Pruning int8 codes would measure nonsense: prune first, then quantize."""
    model, ctx = _quantized({"method": "torchao-int8"})
    with pytest.raises(ConfigError, match=r"already quantized.*put it before the quantizer"):
        build_method({"method": "magnitude-prune", "sparsity": 0.3}).apply(model, ctx)


def test_prune_then_quantize_measures_the_total_error() -> None:
    model = tiny_llama(2)
    ctx = StepContext(originals=state_dict_lookup({k: v.clone()
                                                   for k, v in model.state_dict().items()}))
    build_method({"method": "magnitude-prune", "sparsity": 0.5}).apply(model, ctx)
    pruned = tensor_errors(model, ctx)
    build_method({"method": "quanto", "weights": "int8"}).apply(model, ctx)
    both = tensor_errors(model, ctx)
    assert set(both) == set(pruned)
    assert all(both[k].rel_fro >= pruned[k].rel_fro * 0.99 for k in both)
    w = effective_weight(dict(linear_like(model))["model.layers.0.mlp.up_proj"])
    assert (w == 0).float().mean() > 0.45  # zeros survive int8 quantization


def test_errors_follow_renumbered_layers_after_dropping() -> None:
    model = tiny_llama(4)
    ctx = StepContext(originals=state_dict_lookup({k: v.clone()
                                                   for k, v in model.state_dict().items()}))
    build_method({"method": "drop-layers", "layers": [1]}).apply(model, ctx)
    assert ctx.original_name("model.layers.1.mlp.up_proj.weight") == \
        "model.layers.2.mlp.up_proj.weight"
    assert tensor_errors(model, ctx) == {}  # survivors are untouched, not "changed"


def test_a_missing_backend_names_the_pip_line() -> None:
    class Needs(Method):
        name: ClassVar[str] = "needs"
        requires: ClassVar[tuple[str, ...]] = ("no_such_pkg.sub",)
        pip_hint: ClassVar[str] = "pip install no-such-pkg==1.0"

    with pytest.raises(MethodUnavailable, match=r"needs no_such_pkg.sub: pip install no-such"):
        Needs().check_environment()
