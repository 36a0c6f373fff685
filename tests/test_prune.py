"""Depth and magnitude pruning on a tiny Llama built from a config (no download needed)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shrinktests.compression.context import StepContext, state_dict_lookup
from shrinktests.compression.measure import tensor_errors
from shrinktests.compression.prune import DropLayers, MagnitudePrune, magnitude_mask
from shrinktests.compression.registry import build_method
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError


def tiny_llama(layers: int = 6) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_drop_layers_reports_the_reduction_and_still_generates() -> None:
    """Depth-pruning figures (layers and params before/after, %) and a working KV cache."""
    model = tiny_llama(6)
    ctx = StepContext()
    model = DropLayers(layers=(1, 2, 3)).apply(model, ctx)
    p = ctx.stats["pruning"]
    assert isinstance(p, dict)
    assert (p["layers_before"], p["layers_after"]) == (6, 3)
    assert p["layer_reduction_pct"] == pytest.approx(50.0)
    assert 0 < p["param_reduction_pct"] < 50  # embeddings are not pruned
    assert model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)


def test_drop_layers_keep_every_and_bad_indices() -> None:
    model = tiny_llama(6)
    ctx = StepContext()
    DropLayers(keep_every=2).apply(model, ctx)
    assert len(model.model.layers) == 3
    assert ctx.layer_map == [0, 2, 4]
    with pytest.raises(ConfigError, match="out of range"):
        DropLayers(layers=(9,)).apply(tiny_llama(6), StepContext())
    with pytest.raises(ConfigError, match="all 2 layers"):
        DropLayers(layers=(0, 1)).apply(tiny_llama(2), StepContext())
    with pytest.raises(ConfigError):
        DropLayers()


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_magnitude_mask_hits_the_target_and_keeps_the_largest(sparsity: float) -> None:
    w = torch.randn(16, 32)
    keep = magnitude_mask(w, sparsity, "unstructured")
    assert (~keep).float().mean().item() == pytest.approx(sparsity, abs=1 / w.numel())
    if sparsity > 0:
        assert w.abs()[keep].min() > w.abs()[~keep].max()


def test_two_four_pattern_zeroes_two_of_every_four() -> None:
    w = torch.randn(8, 16)
    keep = magnitude_mask(w, 0.5, "2:4").reshape(-1, 4)
    assert (keep.sum(dim=1) == 2).all()


def test_magnitude_prune_respects_scope_and_records_errors() -> None:
    model = tiny_llama(2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = StepContext(originals=state_dict_lookup(before))
    MagnitudePrune(sparsity=0.5, scope=Scope(part="mlp", layers=(1,))).apply(model, ctx)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"model.layers.1.mlp.{m}.weight" for m in ("gate_proj", "up_proj",
                                                                    "down_proj")}
    assert ctx.stats["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert set(tensor_errors(model, ctx)) == changed


def test_global_granularity_prunes_unevenly_but_hits_the_total() -> None:
    model = tiny_llama(2)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(100)  # this tensor should survive
    ctx = StepContext()
    MagnitudePrune(sparsity=0.5, granularity="global").apply(model, ctx)
    assert ctx.stats["sparsity"] == pytest.approx(0.5, abs=0.01)
    big = model.model.layers[0].mlp.up_proj.weight
    assert (big == 0).float().mean().item() < 0.05


def test_pruning_methods_parse_from_config_tables() -> None:
    m = build_method({"method": "magnitude-prune", "sparsity": 0.3, "pattern": "2:4"})
    assert isinstance(m, MagnitudePrune) and m.pattern == "2:4"
    with pytest.raises(ConfigError, match="sparsity"):
        build_method({"method": "magnitude-prune", "sparsity": 1.5})
    d = build_method({"method": "drop-layers", "layers": [1, 2]})
    assert isinstance(d, DropLayers) and d.layers == (1, 2)
