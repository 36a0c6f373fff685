"""The ``gptq`` method: gptqmodel's per-layer GPTQ solver, driven layer by layer.

On a real layer of the default model, GPTQ must reconstruct the layer's outputs on prompts it
was *not* calibrated on better than round-to-nearest on the same grid. The driver must be
sequential and give the same weights at any thread count, compose (a ``mixed`` rule, before
``eora``), read a calibration file, and count the GPTQ checkpoint layout's bytes."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.compression import gptq
from shrinktests.compression.context import StepContext, state_dict_lookup
from shrinktests.compression.gptq import packed_bytes, read_samples
from shrinktests.compression.registry import build_method
from shrinktests.core.schema import ConfigError
from shrinktests.spec.files import SpecError, load_configs
from tests.test_prune import tiny_llama

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real(model_cache: Path) -> dict[str, Any]:
    """The default model, and its calibration / held-out prompts (two different suites)."""
    from shrinktests.run.engine import render_prompt
    from shrinktests.run.model import default_model_source, load_model, load_tokenizer

    source = default_model_source()
    tokenizer = load_tokenizer(source)

    def prompts(suite: str) -> list[torch.Tensor]:
        raw = tomllib.loads((ROOT / "suites" / f"{suite}.toml").read_text())
        return [torch.tensor(render_prompt(tokenizer, p["text"], True)) for p in raw["prompt"]]

    return {"source": source, "load": lambda: load_model(source)[0],
            "calibration": prompts("calibration"), "held_out": prompts("constraints")}


def _inputs(model: torch.nn.Module, names: list[str], prompts: list[torch.Tensor]
            ) -> dict[str, torch.Tensor]:
    """Each named module's inputs over the prompts, as rows."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: seen[n].append(args[0].reshape(-1, args[0].shape[-1])))
        for n in names]
    with torch.no_grad():
        for ids in prompts:
            model(input_ids=ids.reshape(1, -1))
    for h in handles:
        h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _round_to_nearest(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """The same grid GPTQ rounds to (gptqmodel's own quantizer, per group), without the
    error compensation."""
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.quantizer import Quantizer

    out = torch.empty_like(w)
    for start in range(0, w.shape[1], group_size):
        q = Quantizer(QuantizeConfig(bits=bits, group_size=group_size, sym=True,
                                     offload_to_disk=False))
        q.configure(perchannel=True)
        block = w[:, start:start + group_size]
        q.find_params(block, weight=True)
        out[:, start:start + group_size] = q.quantize(block)
    return out


def test_gptq_beats_round_to_nearest_on_prompts_it_was_not_calibrated_on(
        real: dict[str, Any]) -> None:
    model = real["load"]()
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and ".layers.3." in n]
    held_out = _inputs(model, names, real["held_out"])  # the float model's inputs
    originals = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    ctx = StepContext(calibration=tuple(real["calibration"]))
    build_method({"method": "gptq", "bits": 4, "group_size": 128,
                  "scope": {"layers": [3]}}).apply(model, ctx)
    worse = []
    for name in names:  # the output error on the held-out prompts, GPTQ's against RTN's
        w, x = originals[name], held_out[name]
        quantized = model.get_submodule(name).weight.detach()
        gptq_err = float(((x @ (quantized - w).T) ** 2).mean())
        rtn_err = float(((x @ (_round_to_nearest(w, 4, 128) - w).T) ** 2).mean())
        if not gptq_err < rtn_err:
            worse.append((name, gptq_err, rtn_err))
    assert not worse, worse
    assert ctx.stats["gptq"]["tensors"] == 7
    assert ctx.stats["gptq"]["samples"] == len(real["calibration"])


def test_layers_are_quantized_in_data_flow_groups_and_the_same_at_any_thread_count(
        real: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[list[str]] = []
    original = gptq._next_group

    def spy(pending: Any, run: Any) -> Any:
        group = original(pending, run)
        groups.append([n.rsplit(".", 1)[-1] for n, _ in group])
        return group

    monkeypatch.setattr(gptq, "_next_group", spy)
    weights = []
    threads = torch.get_num_threads()
    for count in (1, 3):  # the solver's float32 sums would follow the thread count
        torch.set_num_threads(count)
        model = real["load"]()
        build_method({"method": "gptq", "bits": 4, "scope": {"layers": [0, 1]}}).apply(
            model, StepContext(calibration=tuple(real["calibration"][:4])))
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()
                        if ".layers.1." in n})
    torch.set_num_threads(threads)
    # q/k/v read one input, then o; gate/up one input, then down: each group sees the
    # outputs of the groups before it, already quantized
    assert groups[:4] == [["q_proj", "k_proj", "v_proj"], ["o_proj"],
                          ["gate_proj", "up_proj"], ["down_proj"]]
    assert groups[:8] == groups[8:]
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 4096), columns=st.integers(1, 4096), bits=st.sampled_from([2, 3, 4, 8]),
       group=st.sampled_from([-1, 32, 64, 128]))
def test_packed_size_is_the_gptq_checkpoint_layout(rows: int, columns: int, bits: int,
                                                   group: int) -> None:
    groups = 1 if group == -1 else math.ceil(columns / group)
    size = packed_bytes(rows, columns, bits, group)
    # codes and zero points at `bits` each, a float16 scale per group and row, an int32 g_idx
    assert size >= (rows * columns + groups * rows) * bits / 8 + 2 * groups * rows + 4 * columns
    assert size < (rows * columns + groups * rows) * bits / 8 + 2 * groups * rows + 4 * columns + 2


def test_four_bits_in_groups_of_128_on_a_real_shape() -> None:
    # down_proj of the default model: 576 outputs × 1536 inputs, 12 groups
    size = packed_bytes(576, 1536, 4, 128)
    assert size == 576 * 1536 // 2 + 12 * 576 // 2 + 2 * 12 * 576 + 4 * 1536
    assert 8 * size / (576 * 1536) == pytest.approx(4.21, abs=0.01)


@settings(max_examples=50, deadline=None)
@given(samples=st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                                min_size=1).filter(lambda t: t.strip() == t and t),
                        min_size=1, max_size=8),
       paragraphs=st.booleans(), keep=st.integers(1, 10) | st.none())
def test_a_calibration_file_is_one_sample_per_paragraph_or_per_line(
        tmp_path_factory: pytest.TempPathFactory, samples: list[str], paragraphs: bool,
        keep: int | None) -> None:
    path = tmp_path_factory.mktemp("cal") / "cal.txt"
    if paragraphs and len(samples) > 1:  # a paragraph may span lines
        expected = [s if i % 2 else f"{s}\n{s}" for i, s in enumerate(samples)]
        path.write_text("\n\n".join(expected) + "\n", encoding="utf-8")
    else:
        expected = samples
        path.write_text("\n".join(samples) + "\n", encoding="utf-8")
    assert read_samples(path, keep) == expected[:keep]


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"bits": 5}, "bits", "2, 3, 4 or 8 bits, got 5"),
    ({"group_size": 0}, "group_size", "-1 .* or >= 1, got 0"),
    ({"damp": 0.0}, "damp", r"in \(0, 1\), got 0.0"),
    ({"samples": 0}, "samples", ">= 1, got 0"),
    ({"act_order": True}, "act_order", "unknown parameter"),
])
def test_bad_parameters_are_config_errors(params: dict[str, Any], field: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_method({"method": "gptq", **params})
    assert info.value.field == field


CONFIGS = """
[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"

[[config]]
name = "gptq-file"
method = "gptq"
calibration = "data/cal.txt"
samples = 2
"""


def _project(tmp_path: Path, configs: str = CONFIGS) -> Path:
    (tmp_path / "suite.toml").write_text('name = "s"\n[[prompt]]\nid = "a"\ntext = "hi"\n')
    (tmp_path / "configs.toml").write_text(configs)
    return tmp_path / "configs.toml"


def test_a_calibration_file_resolves_against_the_configs_file_and_joins_the_fingerprint(
        tmp_path: Path) -> None:
    path = _project(tmp_path)
    (tmp_path / "data").mkdir()
    cal = tmp_path / "data" / "cal.txt"
    cal.write_text("one sample\nanother\na third\n")
    config = load_configs(path).get("gptq-file")
    params = config.params()[0]
    assert params["calibration"] == "data/cal.txt" and "calibration_path" not in params
    assert not config.uses_calibration  # the suites' prompts do not matter to it
    before = config.fingerprint()
    cal.write_text("one sample\nanother, changed\na third\n")
    assert load_configs(path).get("gptq-file").fingerprint() != before
    # the samples are the file's first two lines, tokenized with the model's tokenizer
    step = load_configs(path).get("gptq-file").steps[0]
    ids = step.calibration_ids(StepContext(tokenize=lambda text: [len(text)]))  # type: ignore[attr-defined]
    assert [t.tolist() for t in ids] == [[10], [16]]


def test_a_missing_calibration_file_names_the_config_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"gptq-file.*calibration.*data/cal\.txt: no such file"):
        load_configs(_project(tmp_path))
    mixed = CONFIGS.replace('method = "gptq"\ncalibration = "data/cal.txt"\nsamples = 2',
                            'method = "mixed"\nrules = [{method = "gptq", '
                            'calibration = "nope.txt"}]')
    with pytest.raises(SpecError, match=r"rules\[0\]\.calibration.*nope\.txt: no such file"):
        load_configs(_project(tmp_path, mixed))


def test_gptq_as_mixed_rules_then_a_low_rank_correction() -> None:
    """The recipe's shape on a tiny model: 8-bit attention, 4-bit MLPs, then EoRA on the
    error GPTQ left (measured against the originals)."""
    model = tiny_llama(2)
    ctx = StepContext(originals=state_dict_lookup({k: v.clone() for k, v in
                                                   model.state_dict().items()}),
                      calibration=tuple(torch.randint(0, 64, (12,), generator=torch.
                                                      Generator().manual_seed(i))
                                        for i in range(8)))
    mixed = build_method({"method": "mixed", "rules": [
        {"method": "gptq", "bits": 8, "group_size": 32, "scope": {"part": "attention"}},
        {"method": "gptq", "bits": 4, "group_size": 32, "scope": {"part": "mlp"}}]})
    model = mixed.apply(model, ctx)
    rules = ctx.stats["rules"]
    assert [r["tensors"] for r in rules] == [8, 6]
    assert rules[0]["bits_per_weight"] > 8 > rules[1]["bits_per_weight"] > 4
    assert ctx.stats["gptq"]["tensors"] == 14
    model = build_method({"method": "eora", "rank": 4}).apply(model, ctx)
    assert ctx.stats["eora"]["layers"] == 14
    out = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


def test_without_calibration_prompts_it_says_what_to_give() -> None:
    with pytest.raises(ConfigError, match="needs calibration prompts"):
        build_method({"method": "gptq"}).apply(tiny_llama(1), StepContext())


def test_compressing_holds_no_reference_to_the_model_once_done(tmp_path: Path) -> None:
    """gptqmodel's first import keeps the frames that imported it; imported from inside a
    compression those held the compressed model for the rest of the run. In a fresh
    interpreter (where that import is the first), the model is freed once dropped."""
    import os
    import subprocess
    import sys

    script = tmp_path / "held.py"
    script.write_text(
        "import gc, sys, weakref, torch\n"
        "assert 'gptqmodel' not in sys.modules\n"
        "from shrinktests.compression.context import StepContext\n"
        "from shrinktests.compression.registry import build_method\n"
        "from tests.test_prune import tiny_llama\n"
        "model = tiny_llama(2)\n"
        "calibration = tuple(torch.randint(0, 64, (12,)) for _ in range(4))\n"
        "model = build_method({'method': 'gptq', 'bits': 4, 'group_size': 32}).apply(\n"
        "    model, StepContext(calibration=calibration))\n"
        "assert 'gptqmodel' in sys.modules\n"
        "alive = weakref.ref(model)\n"
        "del model\n"
        "gc.collect()\n"
        "print('held' if alive() is not None else 'freed')\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "freed"
