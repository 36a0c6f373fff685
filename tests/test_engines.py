"""llama.cpp as an engine: which configs it pairs for the engine split, the GGUF file written
for a ``gguf`` step (the numbers the transformers config holds, row for row), and, when the
binding is installed, the embedded file under llama.cpp against the same weights in
transformers (small but non-zero drift, the same tokens where the margin is clear)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from shrinktests.session.engine_split import EngineGroup, engine_groups
from shrinktests.spec.files import load_configs
from tests.conftest import ProjectMaker

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = """
[settings]
reference = "baseline"

[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"

[[config]]
name = "q4"
method = "gguf"
type = "Q4_0"

[[config]]
name = "q4-llama"
method = "gguf"
type = "Q4_0"
engine = "llama.cpp"

[[config]]
name = "q8-llama"
method = "gguf"
type = "Q8_0"
engine = "llama.cpp"

[[config]]
name = "own-llama"
engine = "llama.cpp"
"""


def test_each_llama_config_is_paired_with_the_same_weights_under_transformers(
        tmp_path: Path) -> None:
    path = tmp_path / "configs.toml"
    path.write_text(textwrap.dedent(CONFIGS))
    (tmp_path / "s.toml").write_text('[suite]\nname = "s"\n[[prompt]]\nid = "a"\ntext = "x"\n')
    cs = load_configs(path)
    groups = {g.candidate: g for g in engine_groups(cs.configs, "baseline", True)}
    assert groups["q4-llama"] == EngineGroup("q4-llama", "q4", "own-llama")
    assert groups["q8-llama"] == EngineGroup("q8-llama", None, "own-llama")  # no twin
    assert groups["own-llama"] == EngineGroup("own-llama", "baseline", "own-llama")
    rows = [(c.what, c.a, c.b) for c in groups["q4-llama"].comparisons("baseline")]
    assert rows == [
        ("engine alone (baseline weights)", "baseline", "own-llama"),
        ("engine alone (candidate weights)", "q4", "q4-llama"),
        ("weights alone (transformers)", "baseline", "q4"),
        ("weights alone (llama.cpp)", "own-llama", "q4-llama"),
    ]
    assert len(groups["own-llama"].comparisons("baseline")) == 1
    # a model read from a folder has no GGUF of its own: nothing stands for its weights
    folder = {g.candidate: g for g in engine_groups(cs.configs, "baseline", False)}
    assert folder["q4-llama"].own is None
    assert [c.what for c in folder["q4-llama"].comparisons("baseline")] == [
        "engine alone (candidate weights)", "weights alone (transformers)"]


def test_the_written_gguf_file_holds_the_transformers_configs_numbers(tmp_path: Path) -> None:
    """Row for row (llama.cpp keeps the query and key rows in another order), the Q4_0 file
    holds what the gguf-q4_0 config gives the transformers model; the rest is copied."""
    import gguf

    from shrinktests.compression.llamacpp import dequantize, write_gguf
    from shrinktests.run.model import default_model_source
    from shrinktests.run.variant import build_variant

    source = default_model_source()
    assert source.gguf is not None
    config = load_configs(ROOT / "suites" / "configs.toml").get("gguf-q4_0")
    out = tmp_path / "q4_0.gguf"
    write_gguf(config.steps[0], source.gguf, source.path, out)  # type: ignore[arg-type]
    written = {t.name: t for t in gguf.GGUFReader(out).tensors}
    original = {t.name: t for t in gguf.GGUFReader(source.gguf).tensors}
    assert written.keys() == original.keys()
    assert written["blk.0.ffn_down.weight"].tensor_type.name == "Q4_0"
    assert written["token_embd.weight"].tensor_type == original["token_embd.weight"].tensor_type
    weights = build_variant(source, config).model.state_dict()
    for hf, name in (("model.layers.2.self_attn.q_proj.weight", "blk.2.attn_q.weight"),
                     ("model.layers.2.self_attn.v_proj.weight", "blk.2.attn_v.weight"),
                     ("model.layers.29.mlp.up_proj.weight", "blk.29.ffn_up.weight")):
        t = written[name]
        rows = dequantize(t.data, t.tensor_type.name)
        ours = weights[hf].numpy()
        assert sorted(map(bytes, rows)) == sorted(map(bytes, ours.astype(np.float32))), hf
    assert out.stat().st_size < source.gguf.stat().st_size  # 4.5 bits where Q4_1 has 5


@pytest.fixture(scope="module")
def llama_cpp() -> object:
    return pytest.importorskip(
        "llama_cpp", reason="engine llama.cpp needs llama-cpp-python: make install-llama")


def test_without_the_binding_a_llama_config_cannot_run_and_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from shrinktests.compression.base import MethodUnavailable
    from shrinktests.run import llama_cpp
    from shrinktests.run.model import default_model_source

    monkeypatch.setattr(llama_cpp, "binding_version", lambda: None)
    config = load_configs(ROOT / "suites" / "configs.toml").get("gguf-q4_0-llamacpp")
    with pytest.raises(MethodUnavailable, match=r"make install-llama") as err:
        llama_cpp.build_llama_variant(config, default_model_source(), tmp_path, None, 1)
    assert "llama-cpp-python==0.3.36" in str(err.value)
    assert not list(tmp_path.rglob("*.gguf"))  # nothing written for a config that cannot run


def test_gguf_files_run_under_llama_cpp_with_every_test_and_the_split(
        llama_cpp: object, shrink_project: ProjectMaker) -> None:
    """The model's own Q4_1 file and a written Q4_0 file under llama.cpp: every behaviour test
    runs, the engine alone drifts a little (not zero: other kernels, 8-bit activations), and
    the split separates the engine from the weights."""
    import json

    configs = (ROOT / "suites" / "configs.toml").read_text()
    calibration = (ROOT / "suites" / "calibration.toml").read_text()
    p = shrink_project(configs, calibration)
    report = p.path / "report"
    # one thread: llama.cpp's threads wait for each other by spinning, and under make test
    # another worker holds the other core (its outputs are the same at one and two threads)
    run = p.runpytest_subprocess(
        "suites", "-k", "(q4_1-llamacpp or gguf-q4_0) and not snapshot and not throughput",
        "--shrink-threads",
        "1", f"--shrink-report={report}")
    out = run.stdout.str()
    outcomes = run.parseoutcomes()
    assert "skipped" not in outcomes and "error" not in outcomes, out[-4000:]
    data = json.loads((report / "data.json").read_text())
    own = data["configs"]["q4_1-llamacpp"]
    assert 1e-4 < own["kl"] < 0.05 and own["top1"] > 0.9, own
    assert "gguf SmolLM2-135M-Instruct.Q4_1.gguf: 98.4 MB on disk" in out
    rows = {(r["candidate"], r["what"]): r for r in data["engines"]}
    engine = rows[("gguf-q4_0-llamacpp", "engine alone (candidate weights)")]
    weights = rows[("gguf-q4_0-llamacpp", "weights alone (llama.cpp)")]
    assert 0 < engine["kl"][0] < 0.05 < weights["kl"][0], rows
    assert "which engine moved what" in out


def test_export_of_a_llama_config_writes_the_gguf_file_llama_cpp_reads_back(
        llama_cpp: object, tmp_path: Path) -> None:
    import gguf

    from shrinktests.cli import main

    out = tmp_path / "release" / "model-Q4_0.gguf"
    assert main(["export", "gguf-q4_0-llamacpp", "--out", str(out), "--configs",
                 str(ROOT / "suites" / "configs.toml"), "--threads", "1"]) == 0
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.29.ffn_down.weight"] == "Q4_0"
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary file left
