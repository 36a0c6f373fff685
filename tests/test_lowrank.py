"""Low-rank error correction (EoRA-like): the factorisation maths and the wrapped layers."""

from __future__ import annotations

import itertools

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
    """q/k/v read the same tensor, and so do gate/up: one accumulation each, equal bit for bit
    to what each module's own accumulation gives; o and down read their own inputs."""
    from shrinktests.compression.lowrank import input_covariances

    model = tiny_llama(2)
    modules = list(Scope().linear_modules(model))
    calibration = (torch.tensor([1, 5, 9, 3, 7]), torch.tensor([2, 4, 6]))
    shared = input_covariances(model, modules, calibration)
    alone = {name: input_covariances(model, [(name, m)], calibration)[name]
             for name, m in modules}
    for name in alone:
        assert torch.equal(shared[name], alone[name]), name
    for layer in ("model.layers.0", "model.layers.1"):
        attn, mlp = f"{layer}.self_attn", f"{layer}.mlp"
        assert shared[f"{attn}.q_proj"] is shared[f"{attn}.k_proj"] is shared[f"{attn}.v_proj"]
        assert shared[f"{mlp}.gate_proj"] is shared[f"{mlp}.up_proj"]
        assert shared[f"{attn}.o_proj"] is not shared[f"{attn}.q_proj"]
        assert shared[f"{mlp}.down_proj"] is not shared[f"{mlp}.up_proj"]
    assert len({id(c) for c in shared.values()}) == 8
