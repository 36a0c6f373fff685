"""Released models as candidates: a ``checkpoint`` folder or a ``gguf`` file, gated against
the baseline. Built in the test from the default model: the ``nf4`` config exported with
``python -m shrinktests export`` (it must find what the on-the-fly ``nf4`` config finds), a
folder with two thirds of the layers dropped, and the embedded GGUF itself (the baseline is
that GGUF dequantized, so its KL is ~0); plus the errors of a bad artifact or export."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from shrinktests.spec.files import SpecError, load_configs
from tests.conftest import ProjectMaker

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = """
[settings]
reference = "baseline"
budgets = ["kl_mean <= 1.0"]

[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"

[[config]]
name = "nf4"
method = "bnb-4bit"
quant_type = "nf4"

[[config]]
name = "nf4-folder"
checkpoint = "../artifacts/nf4"

[[config]]
name = "shipped-gguf"
gguf = "{gguf}"

[[config]]
name = "third-of-the-layers"
checkpoint = "../artifacts/pruned"
expect = "breaks"
"""


def _export(config: str, out: Path) -> int:
    from shrinktests.cli import main

    return main(["export", config, "--out", str(out), "--configs",
                 str(ROOT / "suites" / "configs.toml"), "--cache", "none", "--threads", "2"])


def _save_pruned(folder: Path, keep_every: int = 3) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shrinktests.run.model import default_model_source

    source = default_model_source()
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32)
    kept = model.model.layers[::keep_every]
    for i, layer in enumerate(kept):
        layer.self_attn.layer_idx = i
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[: len(kept)]
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source.path).save_pretrained(folder)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    folder = tmp_path_factory.mktemp("artifacts")
    assert _export("nf4", folder / "nf4") == 0  # the shipped nf4 config, as it was tested
    _save_pruned(folder / "pruned")
    return folder


def _outcomes(stdout: str, config: str) -> dict[str, str]:
    """Behaviour test (name with the config left out) -> PASSED/FAILED/XFAIL..."""
    found = {}
    pattern = r"::(test_\w+)\[" + re.escape(config) + r"-(calibration\.[^\]]+)\] (\w+)"
    for m in re.finditer(pattern, stdout):
        found[f"{m.group(1)}[{m.group(2)}]"] = m.group(3)
    return found


def test_released_artifacts_are_gated_like_configs(shrink_project: ProjectMaker,
                                                   artifacts: Path) -> None:
    from shrinktests.run.model import default_gguf

    calibration = (ROOT / "suites" / "calibration.toml").read_text()
    p = shrink_project(CONFIGS.format(gguf=default_gguf()), calibration)
    shutil.copytree(artifacts, p.path / "artifacts")
    report = p.path / "report"
    run = p.runpytest_subprocess("suites", "-v", f"--shrink-report={report}",
                                 "-k", "not snapshot")
    out = run.stdout.str()
    data = json.loads((report / "data.json").read_text())["configs"]
    # the saved NF4 folder is the on-the-fly NF4 model: the same figures, the same verdicts
    assert data["nf4-folder"]["kl"] == pytest.approx(data["nf4"]["kl"], rel=0.01), out[-3000:]
    assert _outcomes(out, "nf4-folder") == _outcomes(out, "nf4") != {}
    # its size is the file that ships: the same bytes the nf4 config holds in memory
    assert data["nf4-folder"]["bits"] == pytest.approx(data["nf4"]["bits"], rel=0.01)
    # the baseline is this GGUF dequantized
    assert data["shipped-gguf"]["kl"] < 1e-6 and data["shipped-gguf"]["top1"] == 1.0
    # ten of thirty layers: reported as breaking where it breaks, with its own figures
    assert data["third-of-the-layers"]["kl"] > 1.0
    assert data["third-of-the-layers"]["verdict"] == "breaks (expected)"
    assert "layers 10 (baseline 30)" in out
    # what fails is nf4's constraint losses, found in both NF4 models alike
    failed = set(re.findall(r"^FAILED \S+::(test_\w+\[[\w.-]+\])", out, re.MULTILINE))
    assert {t.replace("nf4-folder-", "nf4-") for t in failed} == {
        t for t in failed if "[nf4-calibration" in t}, out[-3000:]


def test_a_candidate_with_another_tokenizer_is_a_config_error(
        shrink_project: ProjectMaker, artifacts: Path) -> None:
    from transformers import AutoTokenizer

    p = shrink_project('[[config]]\nname = "baseline"\nmethod = "dtype"\n\n'
                       '[[config]]\nname = "other"\ncheckpoint = "../other-vocab"\n')
    other = p.path / "other-vocab"
    shutil.copytree(artifacts / "nf4", other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<shrinktests-extra>"])
    tok.save_pretrained(other)
    run = p.runpytest_subprocess("suites", "-k", "drift and other")
    run.stdout.fnmatch_lines(["*config 'other' failed: ConfigError: checkpoint: *other-vocab: "
                              "its tokenizer is not the baseline's*"])


@pytest.mark.parametrize(("entry", "message"), [
    ('checkpoint = "missing"', "field 'checkpoint': * no such model folder"),
    ('gguf = "missing.gguf"', "field 'gguf': * no such .gguf file"),
    ('checkpoint = "."\nmethod = "dtype"', "field 'method': a checkpoint config tests the "
                                           "artifact as it is"),
    ('checkpoint = "."\ngguf = "x.gguf"', "field 'checkpoint': give checkpoint or gguf"),
])
def test_bad_artifacts_name_the_config_and_field(tmp_path: Path, entry: str,
                                                 message: str) -> None:
    path = tmp_path / "configs.toml"
    path.write_text('[[config]]\nname = "base"\nmethod = "dtype"\n\n'
                    f'[[config]]\nname = "cand"\n{entry}\n')
    with pytest.raises(SpecError) as err:
        load_configs(path)
    assert re.search(re.escape(message).replace(r"\*", ".*"), str(err.value)), str(err.value)
    assert "config 'cand'" in str(err.value)


def test_a_relative_path_resolves_against_the_configs_file(tmp_path: Path) -> None:
    (tmp_path / "models" / "cand").mkdir(parents=True)
    (tmp_path / "models" / "cand" / "config.json").write_text("{}")
    (tmp_path / "suites").mkdir()
    path = tmp_path / "suites" / "configs.toml"
    path.write_text('[[config]]\nname = "base"\nmethod = "dtype"\n\n'
                    '[[config]]\nname = "cand"\ncheckpoint = "../models/cand"\n')
    cand = load_configs(path).get("cand")
    assert cand.artifact is not None and cand.steps == ()
    assert cand.artifact.path == (tmp_path / "models" / "cand").resolve()
    assert cand.params() == [{"checkpoint": str(cand.artifact.path)}]


def test_export_refuses_an_existing_folder_and_an_unknown_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], model_cache: Path) -> None:
    (tmp_path / "there").mkdir()
    assert _export("nf4", tmp_path / "there") == 1
    assert "there exists; remove it or choose another --out" in capsys.readouterr().err
    assert _export("nf5", tmp_path / "new") == 2
    err = capsys.readouterr().err
    assert "unknown config 'nf5'; known: baseline, bf16" in err and not (tmp_path / "new").exists()


def test_an_artifact_added_to_the_shipped_configs_without_budgets_fails_drift(
        shrink_project: ProjectMaker, tmp_path: Path) -> None:
    """A broken release added to the shipped configs file as it is, with no budgets of its own,
    is held to the file's default drift budgets: it fails, it does not pass silently."""
    configs = (ROOT / "suites" / "configs.toml").read_text()
    configs += '\n[[config]]\nname = "saved-pruned"\ncheckpoint = "../pruned"\n'
    calibration = (ROOT / "suites" / "calibration.toml").read_text()
    p = shrink_project(configs, calibration)
    _save_pruned(p.path / "pruned")
    run = p.runpytest_subprocess("suites", "-k", "drift and saved-pruned")
    out = run.stdout.str()
    outcomes = run.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1 and "passed" not in outcomes, out[-3000:]
    assert re.search(r"kl_mean <= 1.5 but got \d", out) or "top1 >= 0.3 but got" in out, out[-3000:]
