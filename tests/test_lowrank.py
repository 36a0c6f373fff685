"""Low-rank error correction (EoRA-like): the factorisation maths and the wrapped layers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.context import StepContext, state_dict_lookup
from shrinktests.compression.lowrank import (
    LowRankCorrection,
    RankOverride,
    input_basis,
    low_rank_factors,
)
from shrinktests.compression.measure import effective_weight, linear_like, tensor_errors
from shrinktests.compression.scope import Scope
from tests.test_prune import tiny_llama

fast = settings(max_examples=30, deadline=None)


def _weighted_error(delta: torch.Tensor, approx: torch.Tensor, cov: torch.Tensor) -> float:
    d = (delta - approx).double()
    return float(torch.trace(d @ cov.double() @ d.T))


@fast
@given(out=st.integers(1, 12), inp=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_full_rank_reconstructs_and_error_shrinks_with_rank(out: int, inp: int, seed: int) -> None:
    """Rank min(out, in) is exact; every extra rank can only lower the Frobenius error."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(out, inp, generator=g)
    errors = []
    for r in range(min(out, inp) + 1):
        b, a = low_rank_factors(delta, r)
        assert b.shape == (out, r) and a.shape == (r, inp)
        errors.append(float((delta - b @ a).norm()))
    assert errors[-1] == pytest.approx(0.0, abs=1e-4)
    assert all(x >= y - 1e-5 for x, y in itertools.pairwise(errors))
    # asking for more than the matrix holds is capped, not an error
    b, _ = low_rank_factors(delta, 10 * (out + inp))
    assert b.shape[1] == min(out, inp)


@fast
@given(seed=st.integers(0, 2**16), rank=st.integers(1, 4))
def test_activation_aware_factors_win_on_the_calibration_inputs(seed: int, rank: int) -> None:
    """On inputs with a skewed covariance, EoRA's projection has lower error *on those inputs*
    than plain SVD at the same rank (plain SVD is optimal only for isotropic inputs)."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(8, 10, generator=g)
    x = torch.randn(200, 10, generator=g) * torch.logspace(1, -2, 10)  # a few dominant directions
    cov = x.T @ x / x.shape[0]
    plain = torch.matmul(*low_rank_factors(delta, rank))
    aware = torch.matmul(*low_rank_factors(delta, rank, input_basis(cov, damping=1e-9)))
    assert _weighted_error(delta, aware, cov) <= _weighted_error(delta, plain, cov) * (1 + 1e-4)


def test_eora_after_2bit_lowers_reconstruction_error_and_matches_forward() -> None:
    model = tiny_llama(2)
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    scope = Scope(part="mlp")
    ctx = StepContext(originals=state_dict_lookup(originals),
                      calibration=(torch.tensor([1, 5, 9, 3, 7]), torch.tensor([2, 4, 6])))
    BlockwiseQuant(bits=2, block_size=16, scope=scope).apply(model, ctx)
    quantized = tensor_errors(model, ctx)
    last = RankOverride(rank=64, scope=Scope(layers="-1"))
    LowRankCorrection(rank=4, scope=scope, overrides=(last,)).apply(model, ctx)
    corrected = tensor_errors(model, ctx)
    assert set(corrected) == set(quantized)
    for name, err in corrected.items():
        assert err.rel_fro < quantized[name].rel_fro, name
        if ".layers.1." in name:  # rank 64 ≥ the matrix rank: the correction is exact
            assert err.rel_fro < 1e-4
    assert ctx.stats["eora"]["activation_aware"] is True
    assert ctx.stats["eora"]["ranks"] == [4, 32]  # 64 capped by the 32×64 matrices

    # the wrapper computes what its effective weight says, and the model still generates
    layer = dict(linear_like(model))["model.layers.0.mlp.up_proj"]
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ effective_weight(layer).T)
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_eora_without_calibration_falls_back_to_plain_svd_and_says_so() -> None:
    model = tiny_llama(2)
    ctx = StepContext(originals=state_dict_lookup(dict(model.state_dict())))
    LowRankCorrection(rank=2, scope=Scope(part="attention", layers=(0,))).apply(model, ctx)
    assert ctx.stats["eora"]["activation_aware"] is False
    assert ctx.stats["eora"]["layers"] == 4


def test_modules_reading_one_input_share_one_covariance_with_the_same_values() -> None:
    """q/k/v read the same tensor, and so do gate/up: one record each, whose covariance is
    equal bit for bit to what each module's own record gives, and to a float64 sum built
    during the forward passes (how it was made before inputs were kept); o and down read
    their own inputs."""
    from shrinktests.compression.lowrank import CalibrationInputs

    model = tiny_llama(2)
    modules = list(Scope().linear_modules(model))
    calibration = (torch.tensor([1, 5, 9, 3, 7]), torch.tensor([2, 4, 6]))
    shared = CalibrationInputs.record(model, modules, calibration)
    for name, m in modules:
        alone = CalibrationInputs.record(model, [(name, m)], calibration)
        assert torch.equal(shared.covariance(name), alone.covariance(name)), name
        seen: list[torch.Tensor] = []
        handle = m.register_forward_pre_hook(lambda _m, args, out=seen: out.append(args[0]))
        with torch.no_grad():
            for ids in calibration:
                model(input_ids=ids.reshape(1, -1))
        handle.remove()
        flat = [x.reshape(-1, x.shape[-1]).double() for x in seen]
        summed = sum((f.T @ f for f in flat), torch.zeros(()))
        assert torch.equal(shared.covariance(name),
                           (summed / sum(f.shape[0] for f in flat)).float()), name
    for layer in ("model.layers.0", "model.layers.1"):
        attn, mlp = f"{layer}.self_attn", f"{layer}.mlp"
        owner = shared.owner
        assert owner(f"{attn}.q_proj") == owner(f"{attn}.k_proj") == owner(f"{attn}.v_proj")
        assert owner(f"{mlp}.gate_proj") == owner(f"{mlp}.up_proj")
        assert owner(f"{attn}.o_proj") != owner(f"{attn}.q_proj")
        assert owner(f"{mlp}.down_proj") != owner(f"{mlp}.up_proj")
    assert len({shared.owner(name) for name, _ in modules}) == 8
    shared.drop("model.layers.0.self_attn.k_proj")  # a twin drops the shared record
    assert "model.layers.0.self_attn.q_proj" not in shared


def test_inputs_recorded_layer_by_layer_equal_a_full_pass_while_layers_are_rewritten() -> None:
    """Each layer's inputs come as the model was on entry, bit for bit (the covariances equal
    those of full forward passes), even though the caller zeroes every layer it was given
    before asking for the next; a skipped layer in between still runs, and the LM head, outside
    the decoder layers, comes last."""
    from shrinktests.compression.lowrank import CalibrationInputs

    model = tiny_llama(4)
    wanted = [(n, m) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers.2." not in n]
    assert wanted[-1][0] == "lm_head"
    calibration = (torch.tensor([1, 5, 9, 3, 7]), torch.tensor([2, 4, 6]))
    full = CalibrationInputs.record(model, wanted, calibration)
    given: list[str] = []
    for group, inputs in CalibrationInputs.by_layer(model, wanted, calibration):
        for name, module in group:
            assert torch.equal(inputs.covariance(name), full.covariance(name)), name
            given.append(name)
            with torch.no_grad():
                module.weight.zero_()  # what a correction may do once it has the inputs
    assert given == [n for n, _ in wanted]
    assert not any(m.weight.detach().any() for _, m in wanted)


def test_eora_on_bitsandbytes_nf4_reads_each_weight_before_a_forward_repacks_it(
        tmp_path: Path) -> None:
    """bitsandbytes repacks a 4-bit weight for its CPU kernel on the first forward pass, and
    that layout cannot be read back exactly: the calibration passes must leave it alone."""
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # every matrix side a multiple of 64, as the CPU kernel's blocks need
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=4)).save_pretrained(tmp_path)
    originals = dict(LlamaForCausalLM.from_pretrained(tmp_path).state_dict())
    model = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    ctx = StepContext(originals=state_dict_lookup(originals),
                      calibration=(torch.tensor([1, 5, 9, 3, 7]), torch.tensor([2, 4, 6])))
    LowRankCorrection(rank=4).apply(model, ctx)
    assert ctx.stats["eora"]["activation_aware"] is True
    assert ctx.stats["eora"]["layers"] == 14
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
