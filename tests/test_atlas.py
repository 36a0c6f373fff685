"""The sensitivity atlas: pure summaries and recipe maths, swap-and-restore on a tiny Llama,
and the command on the real default model."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.atlas.measure import (
    Atlas,
    AtlasError,
    AtlasScope,
    Probe,
    ScopeDrift,
    ScopeResult,
    atlas_scopes,
    drift_summary,
    first_disagreement,
    parse_scope_id,
    swapped,
)
from shrinktests.atlas.recipe import (
    Entry,
    allocate,
    average_bpw,
    blockwise_bpw,
    configs_file,
    inverse,
    predicted_kl,
    recipe_step,
    uniform_step,
)
from shrinktests.compression.blockwise import BlockwiseQuant, dequantize, quantize
from shrinktests.compression.context import StepContext
from shrinktests.compression.quanto import QuantoWeights
from shrinktests.compression.registry import build_method
from shrinktests.compression.scope import Scope
from shrinktests.judging.metrics import TeacherForced, first_divergence
from shrinktests.judging.stats import ranks, spearman
from shrinktests.report.atlas import ranges
from shrinktests.spec.files import load_configs
from tests.conftest import TINY_SUITE, ProjectMaker
from tests.test_prune import tiny_llama

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- statistics

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(st.integers(-10**5, 10**5), min_size=3, max_size=30, unique=True))
def test_spearman_is_one_for_any_increasing_transform(xs: list[int]) -> None:
    rho, p = spearman([float(x) for x in xs], [float(x**3 + 7) for x in xs],
                      permutations=200)
    assert rho == pytest.approx(1.0)
    assert 0 < p <= 1
    assert spearman([float(x) for x in xs], [-float(x) for x in xs],
                    permutations=200)[0] == pytest.approx(-1.0)


@given(st.lists(st.tuples(finite, finite), min_size=3, max_size=30))
def test_spearman_is_the_pearson_correlation_of_the_ranks(pairs: list[tuple[float, float]]
                                                          ) -> None:
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    rho, p = spearman(xs, ys, permutations=200)
    rx, ry = ranks(xs), ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        assert math.isnan(rho) and p == 1.0
    else:
        assert rho == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]), abs=1e-9)
        assert spearman(xs, ys, permutations=200) == (rho, p)  # fixed seed: same p


def test_ranks_share_ties_and_short_input_has_no_correlation() -> None:
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0])[0])
    with pytest.raises(ValueError, match="unpaired"):
        spearman([1.0, 2.0, 3.0], [1.0])


def test_an_unrelated_pairing_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    rho, p = spearman(rng.normal(size=60).tolist(), rng.normal(size=60).tolist())
    assert abs(rho) < 0.3 and p > 0.05


# --------------------------------------------------------------------------- summaries


def _tf(agree: list[bool], kl: float = 0.1, margin: float = 0.5) -> TeacherForced:
    n = len(agree)
    return TeacherForced(kl=np.full(n, kl), top1_agree=np.array(agree, dtype=bool),
                         p_base=np.full(n, 0.5), p_cand=np.full(n, 0.4),
                         base_margin=np.full(n, margin))


def test_first_disagreement_is_where_greedy_decoding_would_leave_the_baseline() -> None:
    assert first_disagreement(_tf([True, True, False, True])) == 2
    assert first_disagreement(_tf([True, True])) is None
    d = drift_summary([_tf([True, False], 0.2), _tf([True, True, True], 0.4, margin=0.01),
                       _tf([False], 0.6, margin=0.01)], epsilon=0.02)
    assert d.divergences == (1, None, 0)
    assert d.near_ties == 1  # only a divergence at a low-margin step counts
    assert d.first_divergence == 1  # median of 1, 3 (identical: its length), 0
    assert d.kl_mean == pytest.approx(0.4) and d.identical == 1


def test_scope_ids_round_trip_and_select_the_right_tensors() -> None:
    scopes = atlas_scopes(3, ["attention", "mlp", "down_proj"])
    assert [s.id for s in scopes[:3]] == ["L00.attention", "L00.mlp", "L00.down_proj"]
    assert all(parse_scope_id(s.id) == s for s in scopes)
    model = tiny_llama(3)
    names = [n for n, _ in AtlasScope(1, "down_proj").scope().linear_modules(model)]
    assert names == ["model.layers.1.mlp.down_proj"]
    assert len(list(AtlasScope(2, "attention").scope().linear_modules(model))) == 4
    with pytest.raises(ValueError, match="not a scope id"):
        parse_scope_id("3.mlp")


def test_ranges_compress_layer_lists() -> None:
    assert ranges([7, 0, 1, 2, 5, 8, 10]) == "0-2, 5, 7-8, 10"
    assert ranges([]) == ""


# --------------------------------------------------------------------------- recipes


def _result(scope: str, kl: float, params: int, mse: float = 1e-3) -> ScopeResult:
    """A scope whose error quarters with every extra bit (uniform rounding's 6 dB per bit)."""
    s = parse_scope_id(scope)
    drift = ScopeDrift(kl, kl, 1 - kl, (None,), (4,), 0)
    curve = {b: mse * 4.0 ** (2 - b) for b in range(2, 9)}
    return ScopeResult(scope, s.layer, s.part, 1, params, 2.5, mse, 0.3, drift, 0.0, curve)


def _bpw(bits: int) -> float:
    return blockwise_bpw(bits, 32)


def _total(results: list[ScopeResult], allocation: dict[str, int]) -> float:
    return sum(predicted_kl(r, allocation[r.scope]) for r in results)


scope_results = st.lists(
    st.tuples(st.floats(0, 10, allow_nan=False), st.integers(1, 10_000),
              st.sampled_from(["mlp", "attention"])),
    min_size=1, max_size=16).map(
    lambda xs: [_result(f"L{i:02d}.{part}", kl, n) for i, (kl, n, part) in enumerate(xs)])


@given(scope_results, st.floats(2.5, 4.5), st.floats(0.0, 1.0))
def test_a_recipe_never_exceeds_its_bit_budget_and_more_bits_never_hurt(
        results: list[ScopeResult], target: float, more: float) -> None:
    widths = [2, 3, 4]
    mine = allocate(results, widths, _bpw, target)
    assert set(mine) == {r.scope for r in results} and set(mine.values()) <= set(widths)
    assert average_bpw(results, mine, _bpw) <= target + 1e-9
    control = inverse(results, mine)
    assert average_bpw(results, control, _bpw) == pytest.approx(average_bpw(results, mine, _bpw))
    assert _total(results, mine) <= _total(results, control) + 1e-9
    richer = allocate(results, widths, _bpw, min(4.5, target + more))
    assert _total(results, richer) <= _total(results, mine) + 1e-9


def test_the_budget_goes_where_it_removes_the_most_predicted_kl() -> None:
    results = [_result("L00.mlp", 1.0, 300), _result("L00.attention", 0.6, 100),
               _result("L01.mlp", 0.02, 300), _result("L01.attention", 0.01, 100)]
    assert allocate(results, [2, 3, 4], _bpw, 2.5) == dict.fromkeys(
        (r.scope for r in results), 2)
    assert set(allocate(results, [2, 3, 4], _bpw, 4.5).values()) == {4}
    # 800 extra bits at 3.5: the two sensitive scopes get 4 bits, the others stay at 2
    mine = allocate(results, [2, 3, 4], _bpw, 3.5)
    assert mine == {"L00.mlp": 4, "L00.attention": 4, "L01.mlp": 2, "L01.attention": 2}
    assert inverse(results, mine) == {"L00.mlp": 2, "L00.attention": 2, "L01.mlp": 4,
                                      "L01.attention": 4}
    assert predicted_kl(results[0], 3) == pytest.approx(0.25)  # KL follows the weight error
    with pytest.raises(ValueError, match="below the lowest width"):
        allocate(results, [3, 4], _bpw, 2.5)


def test_a_written_recipe_loads_as_a_configs_file(tmp_path: Path) -> None:
    ref = load_configs(ROOT / "suites" / "configs.toml")
    method = BlockwiseQuant(bits=2, block_size=32, levels=(-0.75, -0.25, 0.25, 0.75))
    text = configs_file(ref, [
        Entry("mine", 'a "quoted" description', recipe_step(method, {
            "L03.mlp": 4, "L00.mlp": 4, "L01.attention": 3, "L02.q_proj": 4, "L00.attention": 2,
            "L01.mlp": 2, "L02.mlp": 2, "L03.attention": 2})),
        Entry("flat", "uniform", uniform_step(method, 3)),
    ], "header line\nsecond line")
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    configs = load_configs(path)
    assert configs.names() == ["baseline", "mine", "flat"]
    # judged by the source file's default budgets and settings
    assert configs.get("mine").budgets == ref.get("baseline").budgets
    assert (configs.near_tie_epsilon, configs.confidence) == (ref.near_tie_epsilon,
                                                              ref.confidence)
    mixed = configs.get("mine").steps[1]
    rules = mixed.params()["rules"]
    # widest first, one rule per (width, part); the most common width takes everything else
    assert [(r["bits"], r["scope"]["part"], r["scope"]["layers"], r["scope"]["include"])
            for r in rules] == [(4, "mlp", [0, 3], None), (4, "full", [2], "*.q_proj"),
                                (3, "attention", [1], None), (2, "full", None, None)]
    assert rules[-1]["levels"] == [-0.75, -0.25, 0.25, 0.75]  # the atlas' own codebook
    assert rules[0]["levels"] is None  # other widths: the default codebook
    assert configs.get("flat").steps[1] == BlockwiseQuant(bits=3, block_size=32)
    assert blockwise_bpw(3, 32) == 3.5


# --------------------------------------------------------------------------- tiny model


def _probe(model: torch.nn.Module, length: int = 10) -> Probe:
    """Greedy continuations of the tiny model itself (so they are its baseline)."""
    torch.manual_seed(1)
    prompts = [tuple(torch.randint(1, 64, (n,)).tolist()) for n in (5, 7, 3)]
    conts = []
    for p in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([p]), max_new_tokens=length,  # type: ignore[operator]
                                 min_new_tokens=length, do_sample=False, pad_token_id=0)
        conts.append(tuple(out[0, len(p):].tolist()))
    probe = Probe(prompts, conts, pad_id=0, epsilon=0.0)
    probe.record(model)
    return probe


def test_measuring_a_scope_restores_the_model_bit_for_bit() -> None:
    model = tiny_llama(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    atlas = Atlas(model, _probe(model))
    method = BlockwiseQuant(bits=2, block_size=32)
    r = atlas.measure(method, AtlasScope(0, "mlp"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert atlas.check_restored() == 0.0
    assert (r.tensors, r.params, r.bits_per_weight) == (3, 3 * 32 * 64, 2.5)
    assert r.drift.kl_mean > 0
    # the scope's error is the quantizer's own error on those weights
    w = torch.cat([before[f"model.layers.0.mlp.{n}.weight"].flatten()
                   for n in ("gate_proj", "up_proj", "down_proj")]).double()
    approx = torch.cat([torch.from_numpy(dequantize(quantize(
        before[f"model.layers.0.mlp.{n}.weight"].numpy(), 2, 32))).flatten()
        for n in ("gate_proj", "up_proj", "down_proj")]).double()
    assert r.mse == pytest.approx(float(((w - approx) ** 2).mean()), rel=1e-6)
    assert r.rel_error == pytest.approx(float((w - approx).norm() / w.norm()), rel=1e-6)


def test_a_scope_is_scored_from_its_layer_with_the_whole_pass_numbers() -> None:
    """The pass of a scope at layer L starts at L from the recorded unperturbed state: the
    same log-probs, bit for bit, as running every layer."""
    model = tiny_llama(4)
    probe = _probe(model)
    assert probe.layer_inputs is not None and len(probe.layer_inputs.chunks[0]) == 4
    atlas = Atlas(model, probe)
    method = BlockwiseQuant(bits=2, block_size=32)
    for layer in (0, 2, 3):
        modules = list(AtlasScope(layer, "mlp").scope().linear_modules(model))
        with swapped(model, modules):
            method.apply_to(model, modules, StepContext())
            whole = probe.logprobs(model)
            resumed = probe.logprobs(model, probe.layer_inputs.from_layer(layer))
            assert all(np.array_equal(a, b) for a, b in zip(whole, resumed, strict=True))
            assert probe.drift(model, layer) == probe.drift(model)
    assert len(model.model.layers) == 4  # the slice was put back
    assert atlas.check_restored() == 0.0


def test_a_model_that_changes_given_embeddings_is_scored_whole() -> None:
    """Some decoders scale the embeddings they are given (Gemma multiplies by sqrt(width)),
    so a pass cannot start midway from a recorded state: the probe checks and runs whole."""
    model = tiny_llama(3)

    def scale_given(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("inputs_embeds") is not None:
            kwargs["inputs_embeds"] = kwargs["inputs_embeds"] * 2.0
        return args, kwargs

    model.model.register_forward_pre_hook(scale_given, with_kwargs=True)
    probe = _probe(model)
    assert probe.layer_inputs is None
    modules = list(AtlasScope(1, "mlp").scope().linear_modules(model))
    with swapped(model, modules):
        BlockwiseQuant(bits=2, block_size=32).apply_to(model, modules, StepContext())
        assert probe.drift(model, 1) == probe.drift(model)


def test_a_backend_that_replaces_modules_is_swapped_back_too() -> None:
    model = tiny_llama(2)
    originals = {n: m for n, m in model.named_modules()}
    atlas = Atlas(model, _probe(model))
    r = atlas.measure(QuantoWeights(weights="int4"), AtlasScope(1, "attention"))
    assert r.drift.kl_mean > 0 and r.bits_per_weight < 32
    assert all(model.get_submodule(n) is m for n, m in originals.items() if n)
    assert atlas.check_restored() == 0.0


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 1), st.sampled_from(["attention", "mlp"]))
def test_teacher_forced_divergence_is_the_free_running_one(layer: int, part: str) -> None:
    """Greedy decoding follows the baseline up to the first step whose argmax differs, so the
    divergence the atlas reads off one forward pass is the one a generation would show."""
    model = tiny_llama(2)
    probe = _probe(model, length=12)
    atlas = Atlas(model, probe)
    r = atlas.measure(BlockwiseQuant(bits=2, block_size=32), AtlasScope(layer, part))
    BlockwiseQuant(bits=2, block_size=32, scope=AtlasScope(layer, part).scope()).apply(
        model, StepContext())
    for p, base, div in zip(probe.prompts, probe.continuations, r.drift.divergences,
                            strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([p]), max_new_tokens=12,  # type: ignore[operator]
                                 min_new_tokens=12, do_sample=False, pad_token_id=0)
        free = first_divergence(base, out[0, len(p):].tolist())
        assert (None if free == len(base) else free) == div


def test_whole_config_evaluation_restores_and_a_new_model_is_refused() -> None:
    model = tiny_llama(2)
    atlas = Atlas(model, _probe(model))
    method = BlockwiseQuant(bits=2, block_size=32)
    low = atlas.evaluate("low", [BlockwiseQuant(bits=2, block_size=32)])
    mixed = build_method(recipe_step(method, {"L00.mlp": 4, "L01.mlp": 4, "L00.attention": 2,
                                              "L01.attention": 2, "L02.mlp": 2}))
    mix = atlas.evaluate("mix", [mixed])
    assert low.bits_per_weight == pytest.approx(2.5)
    assert 2.5 < mix.bits_per_weight < 4.5
    assert mix.drift.kl_mean < low.drift.kl_mean
    assert atlas.check_restored() == 0.0
    with pytest.raises(AtlasError, match="selects no linear layer"):
        atlas.measure(method, AtlasScope(5, "mlp"))



def test_weights_kept_on_disk_are_restored_bit_for_bit_even_when_modules_are_replaced(
        tmp_path: Path) -> None:
    """A whole config's originals wait in files, not in memory; a backend that swaps in its
    own modules (quanto) still gets the original modules and weights back."""
    model = tiny_llama(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(Scope().linear_modules(model))
    with swapped(model, modules, tmp_path) as kept:
        assert kept == {}
        assert len(list(tmp_path.glob("*.weight.pt"))) == len(modules)
        QuantoWeights(weights="int4").apply_to(model, modules, StepContext())
        assert any(model.get_submodule(n) is not m for n, m in modules)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(model.get_submodule(n) is m for n, m in modules)

MINIMAL = """[settings]
reference = "baseline"

[settings.atlas]
{line}

[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"
"""


@pytest.mark.parametrize(("line", "field"), [
    ('method = { method = "blockwise", scope = { part = "mlp" } }', "method.scope"),
    ('method = { method = "bnb-4bit" }', "method.method"),
    ('parts = ["mlp", "qproj"]', "parts[1]"),
    ('budgets = ["loop_increase <= 0.1"]', "budgets[0]"),
    ("high_bits = 3", "uniform_bits"),
    ('known_failures = ["L11.mlp"]', "known_failures[0]"),
    ("bits = 2", "bits"),
])
def test_atlas_settings_errors_name_the_field(tmp_path: Path, line: str, field: str) -> None:
    from shrinktests.spec.files import SpecError

    path = tmp_path / "configs.toml"
    path.write_text(MINIMAL.format(line=line))
    with pytest.raises(SpecError, match=rf"\[settings.atlas\], field '{re.escape(field)}'"):
        load_configs(path)
    path.write_text(MINIMAL.format(line=""))
    assert load_configs(path).atlas is not None  # an empty table means every default


# --------------------------------------------------------------------------- real model

ATLAS_CONFIGS = """
[settings]
reference = "baseline"

[settings.atlas]
parts = ["mlp"]
budgets = ["kl_mean <= 100"]

[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"
"""


def test_the_command_maps_the_default_model_and_writes_a_recipe_that_loads(
        tmp_path: Path, fresh_cache: Path) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "configs.toml").write_text(textwrap.dedent(ATLAS_CONFIGS))
    (tmp_path / "suites" / "tiny.toml").write_text(textwrap.dedent(TINY_SUITE))
    out = tmp_path / "atlas"
    run = subprocess.run(
        [sys.executable, "-m", "shrinktests", "atlas", "--configs",
         str(tmp_path / "suites" / "configs.toml"), "--out", str(out), "--cache",
         str(fresh_cache), "--threads", "2"],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "most sensitive first (30 scopes" in run.stdout
    assert "Spearman rho(MSE, KL)" in run.stdout
    assert "restore check: exact" in run.stdout
    assert "30/30" in run.stderr  # the progress bar
    data = json.loads((out / "atlas.json").read_text())
    assert len(data["scopes"]) == 30 and {d["part"] for d in data["scopes"]} == {"mlp"}
    kls = [d["drift"]["kl_mean"] for d in data["scopes"]]
    assert kls == sorted(kls, reverse=True) and kls[-1] > 0
    recipe = load_configs(out / "recipe.toml")
    assert recipe.names() == ["baseline", "atlas-2-4bit", "uniform-3bit", "atlas-inverse-2-4bit"]
    results = data["recipe"]["results"]
    assert results["atlas-2-4bit"]["bits_per_weight"] <= results["uniform-3bit"][
        "bits_per_weight"] + 1e-9
    for name in ("heatmap.svg", "scatter.svg", "index.html", "atlas.md"):
        assert (out / name).stat().st_size > 500, name

    again = subprocess.run(
        [sys.executable, "-m", "shrinktests", "atlas", "--configs",
         str(tmp_path / "suites" / "configs.toml"), "--out", str(out), "--cache",
         str(fresh_cache), "--no-recipe"], capture_output=True, text=True, timeout=300,
        check=False, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "restore check: not needed (every result came from the cache)" in again.stdout


def test_the_command_names_a_bad_part_or_model(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "shrinktests", "atlas", "--configs",
                          str(ROOT / "suites" / "configs.toml"), "--parts", "mlp,ffn"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    assert "--parts: unknown part 'ffn'" in run.stderr
    run = subprocess.run([sys.executable, "-m", "shrinktests", "atlas", "--configs",
                          str(ROOT / "suites" / "configs.toml"), "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2
    assert f"shrinktests atlas: --model {tmp_path}: no config.json" in run.stderr


ATLAS_TABLE = """
[settings.atlas]
budgets = ["kl_mean <= 0.0"]
known_failures = ["test_atlas[L00.mlp]"]
"""
NO_ATLAS = """
[settings]
reference = "baseline"
{atlas}
[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"
"""


def test_atlas_tests_fail_a_too_sensitive_scope_and_keep_known_ones_visible(
        shrink_project: ProjectMaker) -> None:
    pytester = shrink_project(NO_ATLAS.format(atlas=ATLAS_TABLE))
    (pytester.path / "suites" / "test_behaviour.py").write_text(
        "from shrinktests.suite_tests import test_atlas, test_atlas_recipe  # noqa: F401\n")
    result = pytester.runpytest("suites/", "-k", "atlas and L00", "-rA")
    result.assert_outcomes(failed=1, xfailed=1, deselected=59)
    out = result.stdout.str()
    assert "scope L00.attention is too sensitive to method=blockwise, bits=2, block_size=32: " \
           "kl_mean = " in out
    assert "keep it at higher precision" in out
    assert "known sensitive scope (listed as 'test_atlas[L00.mlp]'" in out
    assert "sensitivity atlas: method=blockwise" in out and "(2 scopes" in out

    (pytester.path / "suites" / "configs.toml").write_text(NO_ATLAS.format(atlas=""))
    result = pytester.runpytest("suites/", "-rs")
    result.assert_outcomes(skipped=2)
    assert "no [settings.atlas] in configs.toml" in result.stdout.str()


def test_length_sorted_scoring_keeps_the_order_and_the_values() -> None:
    from shrinktests.run.engine import continuation_logprobs

    model = tiny_llama(2)
    probe = _probe(model)
    prompts = [*probe.prompts, (5, 6)]
    conts = [*probe.continuations, ()]  # an empty continuation keeps its place too
    plain = continuation_logprobs(model, 0, prompts, conts, batch_size=2)
    fast = continuation_logprobs(model, 0, prompts, conts, batch_size=2, by_length=True)
    assert [a.shape for a in plain] == [b.shape for b in fast]
    assert fast[-1].shape == (0, 64)
    for a, b in zip(plain, fast, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_configs_file_kept_elsewhere_runs_the_project_suites(tmp_path: Path) -> None:
    from shrinktests.spec.files import SpecError, suite_files_beside

    project = ROOT / "suites" / "configs.toml"
    alone = tmp_path / "recipe.toml"
    alone.write_text("")
    assert suite_files_beside(alone, project) == suite_files_beside(project)
    with pytest.raises(SpecError, match="no suite files beside this configs file"):
        suite_files_beside(alone)


def test_the_atlas_renders_as_a_table_a_heatmap_and_a_scatter(tmp_path: Path) -> None:
    from shrinktests.atlas.measure import ranked, to_dict
    from shrinktests.report import atlas as atlas_report

    results = ranked([_result(f"L{i:02d}.{part}", kl, n, mse)
                      for i, (kl, mse) in enumerate([(5.7, 5e-3), (0.2, 1e-2), (0.04, 4e-3)])
                      for part, n in (("attention", 100), ("mlp", 300))])
    data = {"method": {"method": "blockwise", "bits": 2, "block_size": 32, "levels": None},
            "parts": ["attention", "mlp"], "budgets": [], "seconds": 12.0,
            "scopes": [to_dict(r) for r in results], "restored": "exact",
            "spearman": {"mse": spearman([r.mse for r in results],
                                         [r.drift.kl_mean for r in results]),
                         "rel_error": (0.1, 0.5)}}
    lines = atlas_report.render(data)
    assert lines[0].startswith("sensitivity atlas: method=blockwise, bits=2, block_size=32,")
    assert "levels" not in lines[0]  # unset parameters are not shown
    assert lines[3].split()[:3] == ["1", "L00.attention", "5.7000"]
    assert any("Spearman rho(MSE, KL)" in line for line in lines)
    heat = atlas_report.heatmap_svg(data)
    assert heat.count("<rect") >= 6 + 10 and "L00.mlp: KL 5.7000" in heat
    scatter = atlas_report.scatter_svg(data)
    assert scatter.count("<circle") == 6 + 2  # six scopes and a legend entry per part
    written = atlas_report.write(tmp_path, data)
    assert {p.name for p in written} == {"atlas.json", "atlas.md", "heatmap.svg", "scatter.svg",
                                         "index.html"}
    assert json.loads((tmp_path / "atlas.json").read_text())["scopes"][0]["scope"] == (
        "L00.attention")

    from shrinktests.report.files import html, markdown

    report = {"configs": {}, "details": {}, "examples": {}, "timeline": {}, "model": "m",
              "aggregates": {}, "judgements": [], "atlas": data, "stale": [], "replays": [],
              "near_ties": [], "numerics": ""}
    md = markdown(report)
    assert "## Sensitivity atlas" in md and "| config |" not in md
    page = html(report)
    assert "Sensitivity atlas" in page and "Continuations side by side" not in page
