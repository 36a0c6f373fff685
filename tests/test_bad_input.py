"""Bad input: any file gives a valid object or one SpecError, and pytest exits with code 4.

The fuzz here mutates the *shipped* suites and configs as text (delete, duplicate or swap
lines, retype values, insert keys, splice random bytes, truncate), complementing
test_spec.py's fuzz of generated documents: real files have comments, inline tables and
multi-line arrays that a generator does not write.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shrinktests.spec.files import ConfigSet, Suite, load_configs, load_suite
from tests.conftest import TWO_CONFIGS, load_or_spec_error

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SUITES = Path(__file__).parent.parent / "suites"
SHIPPED = {p.name: p.read_text(encoding="utf-8") for p in sorted(SUITES.glob("*.toml"))}

KEYS = ["name", "method", "bits", "dtype", "scope", "layers", "part", "budgets", "steps",
        "expect", "known_failures", "reference", "near_tie_epsilon", "benchmark", "rules",
        "suite", "prompt", "id", "text", "checks", "check", "value", "values", "min", "max",
        "max_new_tokens", "chat_template", "description", "nmae", "rank", "sparsity"]
VALUES = ['"x"', '""', "0", "-1", "3", "99999999999999999999", "1.5", "nan", "inf", "true",
          "[]", "[1, 2]", '["a", 1]', "{}", '{ method = "dtype" }', '{ check = "contains" }',
          '"kl_mean <= 0.05"', '"test_drift[*]"', "1979-05-27", '"bnb-4bit"', '"(("',
          "[{}]", '[{ check = "regex", pattern = "(" }]']


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    """A shipped file with one to three text-level mutations."""
    lines = SHIPPED[name].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "retype", "insert",
                                   "truncate"]))
        if op == "delete" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "retype" and lines and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.sampled_from(VALUES))}\n"
        elif op == "insert":
            lines.insert(i, f"{draw(st.sampled_from(KEYS))} = {draw(st.sampled_from(VALUES))}\n")
        elif op == "truncate":
            lines = lines[:i]
    data = "".join(lines).encode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


@_FUZZ
@given(st.data())
def test_fuzz_shipped_configs(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "configs.toml"
    path.write_bytes(data.draw(mutated("configs.toml")))
    result = load_or_spec_error(load_configs, path)
    if result is None:
        return
    assert isinstance(result, ConfigSet)
    assert result.reference in result.names()
    for config in result.configs:
        config.fingerprint()  # what the cache keys need must not crash either


@_FUZZ
@given(st.data())
def test_fuzz_shipped_suites(tmp_path: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([n for n in SHIPPED if n != "configs.toml"]))
    path = tmp_path / name
    path.write_bytes(data.draw(mutated(name)))
    result = load_or_spec_error(load_suite, path)
    if result is None:
        return
    assert isinstance(result, Suite)
    assert len({p.id for p in result.prompts}) == len(result.prompts) > 0


def test_shipped_files_are_the_fuzz_seeds() -> None:
    """The unmutated seeds load, so the fuzz starts from valid files."""
    assert "configs.toml" in SHIPPED and len(SHIPPED) > 1
    load_configs(SUITES / "configs.toml")
    for name in SHIPPED:
        if name != "configs.toml":
            load_suite(SUITES / name)


# --------------------------------------------------------------------------- through pytest

CONFIGS = TWO_CONFIGS
SUITE = """
[suite]
name = "tiny"
max_new_tokens = 8

[[prompt]]
id = "hello"
text = "Say hello."
checks = [{ check = "contains", value = "hello" }]
"""
TESTS = "def test_one(shrink_config, shrink_case):\n    pass\n"
LLAMA = json.dumps({"architectures": ["LlamaForCausalLM"]})

#: (id, configs, suite, model config.json or None for no folder, extra args, expected message)
BAD: list[tuple[str, str, str, str | None, tuple[str, ...], str]] = [
    ("bad-toml", "[[config]\nname = 1", SUITE, LLAMA, (),
     "configs.toml: not valid TOML: Expected ']]' at the end of an array declaration"),
    ("unknown-key", CONFIGS.replace("reference =", "referense ="), SUITE, LLAMA, (),
     "configs.toml, [settings], field 'referense': unknown key (did you mean 'reference'?)"),
    ("config-key-typo", CONFIGS.replace('"bfloat16"', '"bfloat16"\nexpected = "breaks"'), SUITE,
     LLAMA, (), "config 'bf16', field 'expected': unknown key (did you mean 'expect'?); config "
     "keys: budgets, checkpoint, description, engine, expect, gguf, known_failures, name, "
     "replay_epsilon; method parameters: dtype"),
    ("wrong-type", CONFIGS, SUITE.replace("max_new_tokens = 8", 'max_new_tokens = "8"'),
     LLAMA, (), "tiny.toml, [suite], field 'max_new_tokens': expected an integer, got '8'"),
    ("duplicate-id", CONFIGS, SUITE + '\n[[prompt]]\nid = "hello"\ntext = "Hi."\n', LLAMA, (),
     "tiny.toml, prompt 'hello', field 'id': duplicate id"),
    ("unknown-method", CONFIGS.replace('method = "dtype"\ndtype = "bfloat16"',
                                       'method = "bnb-4bits"'), SUITE, LLAMA, (),
     "config 'bf16', field 'method': unknown method 'bnb-4bits' (did you mean 'bnb-4bit'?)"),
    ("unknown-checker", CONFIGS, SUITE.replace('"contains"', '"contain"'), LLAMA, (),
     "prompt 'hello', field 'checks[0].check': unknown checker 'contain' "
     "(did you mean 'contains'?)"),
    ("empty-suite", CONFIGS, '[suite]\nname = "tiny"\n', LLAMA, (),
     "tiny.toml, field 'prompt': a suite needs at least one [[prompt]]"),
    ("no-model-folder", CONFIGS, SUITE, None, (), "/nope: no such folder"),
    ("not-causal-lm", CONFIGS, SUITE, json.dumps({"architectures": ["BertModel"]}), (),
     "architectures ['BertModel'] are not causal language models"),
    ("no-configs-file", "", SUITE, LLAMA, (), "no configs file at"),
    ("suite-name-twice", CONFIGS, SUITE, LLAMA,
     ("--shrink-suite=suites/tiny.toml", "--shrink-suite=suites/tiny.toml"),
     "tiny.toml, [suite], field 'name': 'tiny' is also the name of"),
    ("missing-suite-file", CONFIGS, SUITE, LLAMA, ("--shrink-suite=missing.toml",),
     "missing.toml: file not found"),
]


@pytest.mark.parametrize(("configs", "suite", "model_json", "args", "expected"),
                         [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_usage_error(pytester: pytest.Pytester, configs: str, suite: str,
                                      model_json: str | None, args: tuple[str, ...],
                                      expected: str) -> None:
    """Exit code 4, the file/entry/field (or option) named, no traceback; no model needed."""
    suites = pytester.path / "suites"
    suites.mkdir()
    if configs:
        (suites / "configs.toml").write_text(textwrap.dedent(configs))
    (suites / "tiny.toml").write_text(textwrap.dedent(suite))
    (suites / "test_x.py").write_text(TESTS)
    model = pytester.path / ("model" if model_json is not None else "nope")
    if model_json is not None:
        model.mkdir()
        (model / "config.json").write_text(model_json)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    result = pytester.runpytest_subprocess("suites", f"--shrink-model={model}",
                                           f"--shrink-cache={pytester.path / 'cache'}", *args)
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, (result.stdout.str()[-2000:], err)
    assert expected in err
    assert err.count("ERROR: shrinktests:") == 1
    assert "Traceback" not in err


def test_a_broken_accepted_record_is_one_usage_error(pytester: pytest.Pytester) -> None:
    """The accepted records are read when the run starts: a broken one names its file and
    field before any model loads, like a broken configs file."""
    accepted = pytester.path / "snapshots" / "accepted"
    accepted.mkdir(parents=True)
    (accepted / "bf16.toml").write_text('format = 7\nconfig = "bf16"\n')
    test_bad_input_is_one_usage_error(pytester, CONFIGS, SUITE, LLAMA, (),
                                      "bf16.toml, field 'format': expected 1, got 7")


# --------------------------------------------------------------------------- at load time


def test_scope_matching_no_layer_fails_only_that_config(tmp_path: Path) -> None:
    """Whether a scope matches anything is only known once the model is loaded: then that
    config's tests fail with the reason, and the other configs still build."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from shrinktests.session.session import ConfigCrashed, SessionOptions, ShrinkSession

    folder = tmp_path / "tiny-llama"
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    configs_path = tmp_path / "configs.toml"
    configs_path.write_text(CONFIGS + '\n[[config]]\nname = "q"\nmethod = "blockwise"\n'
                            "bits = 4\nscope = { layers = [7] }\n")
    session = ShrinkSession(SessionOptions(
        model=folder, configs=load_configs(configs_path), suites=(), cache_dir=None,
        threads=1, snapshot_dir=tmp_path / "snapshots"))
    with pytest.raises(ConfigCrashed, match=r"config 'q' failed: ConfigError: scope: "
                                            r"matches no linear layer of this model"):
        session.variant("q")
    with pytest.raises(ConfigCrashed, match="config 'q' failed"):  # remembered, not rebuilt
        session.variant("q")
    assert session.variant("bf16").stats.bits_per_weight < 17  # norms stay float32
    assert session.runs["q"].error is not None and "scope" in session.runs["q"].error
