"""Suite and configs files, budgets and constraint checkers as validated data.

A mistake in a TOML file must come back as one :class:`SpecError` that names the file, the
entry and the field (the plugin turns it into a usage error), never as a traceback from deep
inside the loader. The fuzz tests at the end hold the loaders to that for arbitrary input.
"""

from __future__ import annotations

import json
import math
import operator
import re
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shrinktests.compression.blockwise import BlockwiseQuant
from shrinktests.compression.bnb import Bnb4bit, Bnb8bit
from shrinktests.compression.dtype import DtypeCast
from shrinktests.compression.lowrank import LowRankCorrection
from shrinktests.compression.registry import known_methods
from shrinktests.compression.scope import Scope
from shrinktests.core.schema import ConfigError
from shrinktests.judging.budgets import (
    METRICS,
    Budget,
    BudgetError,
    Violation,
    merge_budgets,
    parse_budget,
    violations,
)
from shrinktests.judging.constraints import (
    Contains,
    ContainsAny,
    NotContains,
    Regex,
    WordCount,
    build_checker,
    known_checkers,
)
from shrinktests.spec.files import ConfigSet, SpecError, Suite, load_configs, load_suite
from tests.conftest import load_or_spec_error

SUITES = Path(__file__).resolve().parent.parent / "suites"

Loader = Callable[[Path], Any]


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _spec_error(loader: Loader, path: Path) -> str:
    """The SpecError message for ``path``; it always starts with the file's path."""
    with pytest.raises(SpecError) as info:
        loader(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


# --------------------------------------------------------------------------- the real files


def test_real_configs_file_loads() -> None:
    """suites/configs.toml is the file every suite run reads: it must load as documented."""
    cs = load_configs(SUITES / "configs.toml")
    assert cs.reference == "baseline"
    assert cs.near_tie_epsilon == 0.02
    assert cs.replay_epsilon == 0.1
    assert cs.get("torchao-w8a8").replay_epsilon == 0.25 and cs.get("nf4").replay_epsilon is None
    assert cs.names()[:3] == ["baseline", "bf16", "fp16"]
    assert {"nf4", "broken-2bit", "drop-third"} <= set(cs.names())
    assert cs.get("baseline").steps == (DtypeCast(dtype="float32"),)
    assert cs.get("bf16").steps == (DtypeCast(dtype="bfloat16"),)
    assert cs.get("nf4").steps == (Bnb4bit(quant_type="nf4"),)
    assert cs.get("broken-2bit").steps == (BlockwiseQuant(bits=2, block_size=32),)
    assert cs.get("broken-2bit").expect == "breaks"
    assert cs.get("bf16").expect == "passes"
    # defaults from [settings] are kept and the config's own replace them per metric
    assert [str(b) for b in cs.get("bf16").budgets] == [
        "repetition <= 0.35", "soup <= 0.2", "min_tokens >= 1", "overshoot <= 0",
        "kl_mean <= 0.05", "top1 >= 0.9",
        "adherence_drop <= 0.1", "loop_increase <= 0.1", "empty_increase <= 0.1",
    ]
    # a config with no drift budget of its own is still bounded (the shipped defaults)
    assert {"kl_mean <= 1.5", "top1 >= 0.3"} <= {str(b) for b in cs.get("baseline").budgets}
    assert cs.get("q4_1-llamacpp").engine == "llama.cpp" and not cs.get("q4_1-llamacpp").steps
    # the accepted state of every shipped config is recorded for exactly these configs
    from shrinktests.accepted import record as accepted

    prompts = sum(len(load_suite(p).prompts) for p in SUITES.glob("*.toml")
                  if p.name != "configs.toml")

    recorded = accepted.load_folder(SUITES.parent / "snapshots" / accepted.FOLDER)
    assert sorted(recorded) == sorted(n for n in cs.names() if n != cs.reference)
    for name, record in recorded.items():
        config = cs.get(name)
        assert list(record.steps) == config.params(), name
        if not config.uses_calibration:  # else the fingerprint covers the prompts too
            assert record.fingerprint == config.fingerprint(), name
        assert all(re.fullmatch(rf"test_\w+\[{re.escape(name)}(-.+)?\]", t)
                   for t in record.failures), name
        assert len(record.outputs) == prompts, name


def test_real_configs_file_uses_every_method() -> None:
    """The shipped configs are the demo of the library: each registered method appears at
    least once (as a step or a mixed-precision rule), and so runs in every CI."""
    cs = load_configs(SUITES / "configs.toml")
    used: set[str] = set()
    for config in cs.configs:
        for step in config.steps:
            used.add(step.name)
            used.update(r.name for r in getattr(step, "rules", ()))
    assert used == set(known_methods())
    assert {c.name for c in cs.configs if c.expect == "breaks"} == {"broken-2bit", "drop-third"}


def test_real_calibration_suite_loads() -> None:
    """suites/calibration.toml: six prompts, each with typed checkers built from its tables."""
    suite = load_suite(SUITES / "calibration.toml")
    assert suite.name == "calibration"
    assert (suite.max_new_tokens, suite.chat_template) == (48, True)
    assert [p.id for p in suite.prompts] == [
        "german-greeting", "multiplication", "zurich-haiku", "sky-blue", "cat-summary",
        "swiss-cities",
    ]
    assert suite.prompt("multiplication").checks == (Contains(value="391"),)
    assert suite.prompt("zurich-haiku").checks == (
        ContainsAny(values=("train", "rail", "track", "station")), WordCount(max=40),
    )
    assert suite.prompt("sky-blue").checks == (Regex(pattern="(?i)scatter"),)
    assert getattr(suite.prompt("swiss-cities").checks[0], "min", None) == 3


# --------------------------------------------------------------------------- valid files

MINIMAL_SUITE = """
[suite]
name = "tiny"

[[prompt]]
id = "hello"
text = "Say hello."
"""

CONFIGS_HEAD = """
[settings]
reference = "a"
budgets = ["repetition <= 0.5", "kl_mean <= 1"]
"""


def test_suite_defaults_and_lookup(tmp_path: Path) -> None:
    """Omitted suite fields take their documented defaults; prompt() finds by id."""
    suite = load_suite(_write(tmp_path, MINIMAL_SUITE))
    assert isinstance(suite, Suite)
    assert (suite.max_new_tokens, suite.chat_template, suite.description) == (48, True, "")
    assert suite.prompt("hello").checks == ()
    assert suite.path == tmp_path / "spec.toml"
    with pytest.raises(KeyError):
        suite.prompt("nope")


def test_configs_defaults_merge_and_multi_step(tmp_path: Path) -> None:
    """reference defaults to the first config; a config budget replaces the default one on the
    same metric; steps keep their order; a load-time quantizer may be the first step."""
    cs = load_configs(_write(tmp_path, """
        [settings]
        budgets = ["repetition <= 0.5", "kl_mean <= 1"]

        [[config]]
        name = "a"
        method = "dtype"

        [[config]]
        name = "b"
        budgets = ["kl_mean <= 0.1", "top1 >= 0.5"]
        steps = [{method = "bnb-8bit", threshold = 5},
                 {method = "eora", rank = 8, scope = {part = "mlp", layers = "0,-1"}}]
    """))
    assert isinstance(cs, ConfigSet)
    assert cs.reference == "a"
    assert cs.near_tie_epsilon == 0.02
    assert cs.get("a").steps == (DtypeCast(),)
    assert cs.get("a").expect == "passes"
    assert cs.get("a").budgets == (Budget("repetition", "<=", 0.5), Budget("kl_mean", "<=", 1.0))
    b = cs.get("b")
    assert b.steps == (
        Bnb8bit(threshold=5.0),
        LowRankCorrection(rank=8, scope=Scope(part="mlp", layers="0,-1")),
    )
    assert b.budgets == (
        Budget("repetition", "<=", 0.5), Budget("kl_mean", "<=", 0.1), Budget("top1", ">=", 0.5),
    )
    with pytest.raises(KeyError, match="unknown config 'c'; known: a, b"):
        cs.get("c")


def test_fingerprint_follows_the_weights_not_the_budgets(tmp_path: Path) -> None:
    """Cached generations are keyed by fingerprint: budgets and descriptions must not change
    it, a different bit width must."""
    cs = load_configs(_write(tmp_path, """
        [[config]]
        name = "a"
        method = "blockwise"
        bits = 2

        [[config]]
        name = "b"
        method = "blockwise"
        bits = 2
        description = "same weights"
        budgets = ["top1 >= 0.1"]

        [[config]]
        name = "c"
        method = "blockwise"
        bits = 3
    """))
    a, b, c = cs.configs
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint())


# --------------------------------------------------------------------------- suite errors

_PROMPT = '\n[[prompt]]\nid = "hello"\ntext = "Say hello."\n'
_HEAD = '[suite]\nname = "tiny"\n'

SUITE_ERRORS: dict[str, tuple[str, list[str]]] = {
    "invalid-toml": ('[suite\nname = "tiny"\n', ["not valid TOML"]),
    "unknown-top-key": ('[suites]\nname = "tiny"\n' + _PROMPT,
                        ["field 'suites'", "did you mean 'suite'"]),
    "unknown-suite-key": (_HEAD + "max_new_token = 8\n" + _PROMPT,
                          ["[suite]", "field 'max_new_token'", "did you mean 'max_new_tokens'"]),
    "unknown-prompt-key": (_HEAD + '[[prompt]]\nid = "hello"\ntxt = "hi"\n',
                           ["prompt 'hello'", "field 'txt'", "did you mean 'text'"]),
    "missing-suite": (_PROMPT, ["field 'suite'", "missing [suite] table"]),
    "name-type": ("[suite]\nname = 3\n" + _PROMPT, ["[suite]", "field 'name'", "a string"]),
    "name-format": ('[suite]\nname = "My Suite"\n' + _PROMPT,
                    ["[suite]", "field 'name'", "lowercase"]),
    "max-new-tokens-type": (_HEAD + 'max_new_tokens = "8"\n' + _PROMPT,
                            ["[suite]", "field 'max_new_tokens'", "expected an integer, got '8'"]),
    "max-new-tokens-bool": (_HEAD + "max_new_tokens = true\n" + _PROMPT,
                            ["field 'max_new_tokens'", "expected an integer, got True"]),
    "max-new-tokens-range": (_HEAD + "max_new_tokens = 0\n" + _PROMPT,
                             ["field 'max_new_tokens'", "must be in 1..4096, got 0"]),
    "chat-template-type": (_HEAD + 'chat_template = "yes"\n' + _PROMPT,
                           ["[suite]", "field 'chat_template'", "true or false"]),
    "description-type": (_HEAD + "description = 1\n" + _PROMPT,
                         ["[suite]", "field 'description'"]),
    "empty-suite": (_HEAD, ["field 'prompt'", "at least one [[prompt]]"]),
    "prompt-not-table": ('prompt = ["hi"]\n' + _HEAD, ["prompt #1", "must be a table"]),
    "id-type": (_HEAD + '[[prompt]]\nid = 3\ntext = "x"\n',
                ["prompt #1", "field 'id'", "expected a string, got 3"]),
    "id-missing": (_HEAD + '[[prompt]]\ntext = "x"\n', ["prompt #1", "field 'id'"]),
    "id-format": (_HEAD + '[[prompt]]\nid = "Hello World"\ntext = "x"\n',
                  ["prompt 'Hello World'", "field 'id'", "lowercase"]),
    "duplicate-id": (_HEAD + _PROMPT + _PROMPT,
                     ["prompt 'hello'", "field 'id'", "duplicate id"]),
    "text-type": (_HEAD + '[[prompt]]\nid = "hello"\ntext = 5\n',
                  ["prompt 'hello'", "field 'text'", "expected a string, got 5"]),
    "text-empty": (_HEAD + '[[prompt]]\nid = "hello"\ntext = "  "\n',
                   ["prompt 'hello'", "field 'text'", "empty prompt"]),
    "checks-not-list": (_HEAD + _PROMPT + 'checks = {check = "contains", value = "x"}\n',
                        ["prompt 'hello'", "field 'checks'", "expected a list"]),
    "check-not-table": (_HEAD + _PROMPT + 'checks = ["contains"]\n',
                        ["prompt 'hello'", "field 'checks[0]'", "expected a table like"]),
    "unknown-checker": (
        _HEAD + _PROMPT + 'checks = [{check = "contain", value = "x"}]\n',
        ["prompt 'hello'", "field 'checks[0].check'", "unknown checker 'contain'",
         "did you mean 'contains'", "known: contains, contains_any, handles_empty_input"],
    ),
    "checker-missing-name": (_HEAD + _PROMPT + 'checks = [{value = "x"}]\n',
                             ["field 'checks[0].check'", "unknown checker None"]),
    "unknown-checker-param": (
        _HEAD + _PROMPT + 'checks = [{check = "contains", valeu = "x"}]\n',
        ["prompt 'hello'", "field 'checks[0].valeu'", "did you mean 'value'"],
    ),
    "checker-param-type": (
        _HEAD + _PROMPT + 'checks = [{check = "contains", value = "x"}, '
        '{check = "word_count", max = "40"}]\n',
        ["prompt 'hello'", "field 'checks[1].max'", "expected an integer"],
    ),
    "checker-list-type": (
        _HEAD + _PROMPT + 'checks = [{check = "contains_any", values = "train"}]\n',
        ["field 'checks[0].values'", "expected a list"],
    ),
    "checker-list-item-type": (
        _HEAD + _PROMPT + 'checks = [{check = "contains_any", values = ["a", 1]}]\n',
        ["field 'checks[0].values[1]'", "expected a string, got 1"],
    ),
    "bad-regex": (
        _HEAD + _PROMPT + 'checks = [{check = "regex", pattern = "("}]\n',
        ["prompt 'hello'", "field 'checks[0].pattern'", "not a valid regular expression"],
    ),
}


@pytest.mark.parametrize("text,fragments", SUITE_ERRORS.values(), ids=SUITE_ERRORS.keys())
def test_suite_error_names_file_entry_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    """Each mistake is reported where it is, with what was expected (and a did-you-mean)."""
    message = _spec_error(load_suite, _write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_suite_file_is_a_spec_error(tmp_path: Path) -> None:
    """A wrong --shrink-suite path is a usage error, not a FileNotFoundError traceback."""
    assert "file not found" in _spec_error(load_suite, tmp_path / "missing.toml")
    assert "file not found" in _spec_error(load_configs, tmp_path / "missing.toml")


# --------------------------------------------------------------------------- configs errors

_A = '\n[[config]]\nname = "a"\nmethod = "dtype"\n'
_B = '\n[[config]]\nname = "b"\nmethod = "dtype"\n'


def _cfg(body: str, name: str = "q2") -> str:
    return f'{_A}\n[[config]]\nname = "{name}"\n{body}\n'


CONFIG_ERRORS: dict[str, tuple[str, list[str]]] = {
    "invalid-toml": ('[[config]\nname = "a"\n', ["not valid TOML"]),
    "unknown-top-key": ("[setting]\n" + _A, ["field 'setting'", "did you mean 'settings'"]),
    "settings-not-table": ("settings = 3\n" + _A, ["field 'settings'", "must be a table"]),
    "unknown-settings-key": ('[settings]\nreferense = "a"\n' + _A,
                             ["[settings]", "field 'referense'", "did you mean 'reference'"]),
    "epsilon-range": ("[settings]\nnear_tie_epsilon = 1.5\n" + _A,
                      ["[settings]", "field 'near_tie_epsilon'", "must be in [0, 1), got 1.5"]),
    "epsilon-type": ('[settings]\nnear_tie_epsilon = "0.1"\n' + _A,
                     ["[settings]", "field 'near_tie_epsilon'"]),
    "replay-epsilon-range": ("[settings]\nreplay_epsilon = 1.0\n" + _A,
                             ["[settings]", "field 'replay_epsilon'", "must be in [0, 1)"]),
    "no-configs": ('[settings]\nreference = "a"\n', ["field 'config'", "at least one [[config]]"]),
    "config-table-not-array": ('[config]\nname = "a"\nmethod = "dtype"\n',
                               ["field 'config'", "at least one [[config]]"]),
    "config-not-table": ("config = [1]\n", ["config #1", "must be a table"]),
    "name-missing": ('[[config]]\nmethod = "dtype"\n', ["config #1", "field 'name'"]),
    "name-type": ('[[config]]\nname = 5\nmethod = "dtype"\n',
                  ["config #1", "field 'name'", "expected a string, got 5"]),
    "name-format": ('[[config]]\nname = "Q 2"\nmethod = "dtype"\n',
                    ["config 'Q 2'", "field 'name'", "lowercase"]),
    "duplicate-name": (_A + _B + _A, ["config 'a'", "field 'name'", "duplicate config name"]),
    "no-method": (_cfg('description = "x"'), ["config 'q2'", "field 'method'", "give method"]),
    "method-type": (_cfg("method = 3"), ["config 'q2'", "field 'method'", "must name one of"]),
    "unknown-method": (
        _cfg('method = "blockwize"'),
        ["config 'q2'", "field 'method'", "unknown method 'blockwize'",
         "did you mean 'blockwise'", "known: " + ", ".join(known_methods())],
    ),
    "unknown-method-param": (
        _cfg('method = "blockwise"\nbitz = 2'),
        ["config 'q2'", "field 'bitz'", "unknown parameter", "did you mean 'bits'"],
    ),
    "unknown-step-param": (
        _cfg('steps = [{method = "dtype"}, {method = "blockwise", bitz = 2}]'),
        ["config 'q2'", "field 'steps[1].bitz'", "did you mean 'bits'"],
    ),
    "unknown-key-beside-steps": (
        _cfg('steps = [{method = "dtype"}]\nbudget = ["top1 >= 0.5"]'),
        ["config 'q2'", "field 'budget'", "did you mean 'budgets'"],
    ),
    "param-type": (_cfg('method = "blockwise"\nbits = "2"'),
                   ["config 'q2'", "field 'bits'", "expected an integer, got '2'"]),
    "param-bool-for-int": (_cfg('method = "blockwise"\nbits = true'),
                           ["field 'bits'", "expected an integer"]),
    "param-literal": (_cfg('method = "dtype"\ndtype = "float64"'),
                      ["config 'q2'", "field 'dtype'", "must be one of"]),
    "param-list-item": (_cfg('method = "blockwise"\nlevels = [-1, "a", 0, 1]'),
                        ["config 'q2'", "field 'levels[1]'", "expected a number, got 'a'"]),
    "nested-param-value": (_cfg('method = "blockwise"\nscope = {part = "attn"}'),
                           ["config 'q2'", "field 'scope.part'", "must be one of"]),
    "nested-unknown-param": (_cfg('method = "blockwise"\nscope = {layer = [0]}'),
                             ["config 'q2'", "field 'scope.layer'", "did you mean 'layers'"]),
    "nested-not-table": (_cfg('method = "blockwise"\nscope = "mlp"'),
                         ["field 'scope'", "expected a table"]),
    "method-validation": (_cfg('method = "blockwise"\nbits = 9'),
                          ["config 'q2'", "field 'bits'", "1..8, got 9"]),
    "codebook-length": (_cfg('method = "blockwise"\nbits = 2\nlevels = [-1, 1]'),
                        ["config 'q2'", "field 'levels'", "needs 4 values"]),
    "steps-empty": (_cfg("steps = []"), ["config 'q2'", "field 'steps'", "empty"]),
    "steps-not-list": (_cfg('steps = "dtype"'),
                       ["config 'q2'", "field 'steps'", "a list of tables"]),
    "step-not-table": (_cfg('steps = ["dtype"]'),
                       ["config 'q2'", "field 'steps[0]'", "must be a table"]),
    "loader-not-first": (
        _cfg('steps = [{method = "dtype"}, {method = "bnb-4bit"}]'),
        ["config 'q2'", "field 'steps'", "must be the first step"],
    ),
    "two-loaders": (
        _cfg('steps = [{method = "bnb-8bit"}, {method = "bnb-4bit"}]'),
        ["config 'q2'", "field 'steps'", "only one"],
    ),
    "unknown-engine": (_cfg('method = "gguf"\nengine = "llamacpp"'),
                       ["config 'q2'", "field 'engine'", "unknown engine 'llamacpp'",
                        "did you mean 'llama.cpp'", "known: transformers, llama.cpp"]),
    "llama-engine-other-method": (_cfg('method = "blockwise"\nengine = "llama.cpp"'),
                                  ["config 'q2'", "field 'engine'", "runs GGUF files"]),
    "expect-value": (_cfg('method = "dtype"\nexpect = "fails"'),
                     ["config 'q2'", "field 'expect'",
                      "must be one of 'passes', 'breaks', got 'fails'"]),
    "config-replay-epsilon": (_cfg('method = "dtype"\nreplay_epsilon = 1.5'),
                              ["config 'q2'", "field 'replay_epsilon'",
                               "must be in [0, 1), got 1.5"]),
    "engine-type": (_cfg('method = "gguf"\nengine = 3'),
                    ["config 'q2'", "field 'engine'", "expected a string, got 3"]),
    "description-type": (_cfg('method = "dtype"\ndescription = 1'),
                         ["config 'q2'", "field 'description'"]),
    "budget-syntax": (
        _cfg('method = "dtype"\nbudgets = ["kl_mean = 0.05"]'),
        ["config 'q2'", "field 'budgets[0]'", "cannot parse budget 'kl_mean = 0.05'"],
    ),
    "budget-metric": (
        _cfg('method = "dtype"\nbudgets = ["top1 >= 0.9", "kl_men <= 1"]'),
        ["config 'q2'", "field 'budgets[1]'", "unknown metric 'kl_men'",
         "did you mean 'kl_mean'"],
    ),
    "budget-not-string": (_cfg('method = "dtype"\nbudgets = [1]'),
                          ["config 'q2'", "field 'budgets[0]'", "expected a string"]),
    "budgets-not-list": (_cfg('method = "dtype"\nbudgets = "top1 >= 0.9"'),
                         ["config 'q2'", "field 'budgets'", "must be a list"]),
    "settings-budget": ('[settings]\nbudgets = ["top1 >= 0.9", "nonsense"]\n' + _A,
                        ["[settings]", "field 'budgets[1]'", "cannot parse budget 'nonsense'"]),
    "bench-rounds": ("[settings]\nbenchmark = { rounds = 0 }\n" + _A,
                     ["[settings]", "field 'benchmark.rounds'", "must be >= 1, got 0"]),
    "bench-unknown": ("[settings]\nbenchmark = { tokens = 8 }\n" + _A,
                      ["[settings]", "field 'benchmark.tokens'", "did you mean 'new_tokens'"]),
    "bench-not-table": ("[settings]\nbenchmark = 8\n" + _A,
                        ["[settings]", "field 'benchmark'", "must be a table"]),
    "mixed-rule": (_cfg('method = "mixed"\nrules = [{method = "quanto", weights = "int3"}]'),
                   ["config 'q2'", "field 'rules[0].weights'", "must be one of"]),
    "eora-damping": (_cfg('steps = [{method = "dtype"}, {method = "eora", damping = 0}]'),
                     ["config 'q2'", "field 'steps[1].damping'", "must be in (0, 10]"]),
    "reference-missing": ('[settings]\nreference = "nope"\n' + _A + _B,
                          ["[settings]", "field 'reference'", "'nope' is not a config",
                           "known: a, b"]),
    "known-failures-prefix": (
        _cfg('method = "dtype"\nknown_failures = ["test_drift[*]", "drift[*]"]'),
        ["config 'q2'", "field 'known_failures[1]'", "got 'drift[*]'"],
    ),
    "known-failures-type": (_cfg('method = "dtype"\nknown_failures = [3]'),
                            ["config 'q2'", "field 'known_failures[0]'", "got 3"]),
    "known-failures-not-list": (_cfg('method = "dtype"\nknown_failures = "test_x"'),
                                ["config 'q2'", "field 'known_failures'"]),
}


@pytest.mark.parametrize("text,fragments", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_configs_error_names_file_entry_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    """Each mistake is reported where it is, with what was expected (and a did-you-mean)."""
    message = _spec_error(load_configs, _write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------- regressions found by fuzzing


def test_budget_with_unparseable_number_is_a_budget_error() -> None:
    """``[-+0-9.eE]+`` accepts '.', so the float conversion must be guarded too."""
    with pytest.raises(BudgetError):
        parse_budget("kl_mean <= .")


def test_configs_budget_with_unparseable_number_is_a_spec_error(tmp_path: Path) -> None:
    """A typo like 'kl_mean <= 1.2.3' must be a usage error naming budgets[0]."""
    path = _write(tmp_path, _cfg('method = "dtype"\nbudgets = ["kl_mean <= 1.2.3"]'))
    assert "field 'budgets[0]'" in _spec_error(load_configs, path)


def test_checker_missing_required_parameter_is_a_config_error() -> None:
    """{check = "contains"} without value should name the missing field."""
    with pytest.raises(ConfigError) as info:
        build_checker({"check": "contains"})
    assert info.value.field == "value"


def test_suite_checker_missing_required_parameter_is_a_spec_error(tmp_path: Path) -> None:
    """Forgetting ``value`` in a contains check is a plain user mistake."""
    path = _write(tmp_path, _HEAD + _PROMPT + 'checks = [{check = "contains"}]\n')
    assert "checks[0]" in _spec_error(load_suite, path)


def test_suite_regex_with_huge_repetition_is_a_spec_error(tmp_path: Path) -> None:
    """Any pattern re.compile rejects must be reported like '(' is."""
    path = _write(tmp_path, _HEAD + _PROMPT +
                  'checks = [{check = "regex", pattern = "a{4294967296}"}]\n')
    assert "checks[0].pattern" in _spec_error(load_suite, path)


@pytest.mark.parametrize("loader", [load_suite, load_configs], ids=["suite", "configs"])
def test_non_utf8_file_is_a_spec_error(tmp_path: Path, loader: Loader) -> None:
    """A suite saved as Latin-1 ('Zürich') must be a usage error, not a traceback."""
    path = tmp_path / "latin1.toml"
    path.write_bytes((_HEAD + _PROMPT + _A).replace("Say hello.", "Zürich").encode("latin-1"))
    _spec_error(loader, path)


@pytest.mark.parametrize("kind", ["prompt-id", "suite-name", "config-name"])
def test_identifier_with_trailing_newline_is_rejected(tmp_path: Path, kind: str) -> None:
    """Ids become pytest node ids; the rule 'lowercase letters, digits, - and _' has no
    newline in it."""
    if kind == "prompt-id":
        path = _write(tmp_path, _HEAD + '[[prompt]]\nid = "hello\\n"\ntext = "x"\n')
        _spec_error(load_suite, path)
    elif kind == "suite-name":
        _spec_error(load_suite, _write(tmp_path, '[suite]\nname = "tiny\\n"\n' + _PROMPT))
    else:
        _spec_error(load_configs, _write(tmp_path, '[[config]]\nname = "a\\n"\nmethod = "dtype"\n'))


# --------------------------------------------------------------------------- budgets


def test_parse_budget_worked_examples() -> None:
    """Whitespace is optional, numbers may be signed, scientific or infinite."""
    assert parse_budget("kl_mean <= 0.05") == Budget("kl_mean", "<=", 0.05)
    assert parse_budget("  top1>=0.9 ") == Budget("top1", ">=", 0.9)
    assert parse_budget("delta_p > -0.1") == Budget("delta_p", ">", -0.1)
    assert parse_budget("kl_max < 1e-3") == Budget("kl_max", "<", 0.001)
    assert parse_budget("kl_max <= inf") == Budget("kl_max", "<=", math.inf)
    assert parse_budget("min_tokens >= +1") == Budget("min_tokens", ">=", 1.0)
    assert str(parse_budget("kl_mean <= 0.050")) == "kl_mean <= 0.05"


@pytest.mark.parametrize(
    "text,match",
    [
        (5, "expected a string"),
        ("kl_mean == 0.05", "cannot parse budget"),
        ("kl_mean <= ", "cannot parse budget"),
        ("kl_mean <= 0.05 extra", "cannot parse budget"),
        ("KL_MEAN <= 0.05", "cannot parse budget"),
        ("kl_mean <= nan", "cannot parse budget"),
        ("top_1 >= 0.9", "unknown metric 'top_1'.*did you mean 'top1'"),
        ("latency <= 3", "unknown metric 'latency'.*known: first_divergence"),
    ],
)
def test_parse_budget_rejects(text: Any, match: str) -> None:
    """A bad budget is a BudgetError that quotes it and says what is allowed."""
    with pytest.raises(BudgetError, match=match):
        parse_budget(text)


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from(sorted(METRICS)),
    st.sampled_from(["<=", ">=", "<", ">"]),
    st.integers(-100_000, 100_000).map(lambda n: n / 100),
)
def test_budget_str_parses_back(metric: str, op: str, limit: float) -> None:
    """Reports print budgets with str(); that text is valid budget syntax for the same bound."""
    budget = Budget(metric, op, limit)
    assert parse_budget(str(budget)) == budget


_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from(["<=", ">=", "<", ">"]),
    st.floats(-10, 10),
    st.one_of(st.none(), st.floats(-10, 10), st.just(math.nan)),
)
def test_budget_holds_is_the_comparison(op: str, limit: float, value: float | None) -> None:
    """None (not applicable) always holds, nan never does, otherwise it is the operator."""
    holds = Budget("kl_mean", op, limit).holds(value)
    if value is None:
        assert holds
    elif math.isnan(value):
        assert not holds
    else:
        assert holds == _OPERATORS[op](value, limit)


def test_budget_boundaries() -> None:
    """<= and >= include the limit, < and > exclude it."""
    assert Budget("top1", ">=", 0.9).holds(0.9)
    assert not Budget("top1", ">", 0.9).holds(0.9)
    assert Budget("kl_mean", "<=", 0.05).holds(0.05)
    assert not Budget("kl_mean", "<", 0.05).holds(0.05)


def test_merge_budgets_overrides_by_metric() -> None:
    """Config budgets replace defaults on the same metric and add new ones; others stay."""
    defaults = [parse_budget("repetition <= 0.35"), parse_budget("kl_mean <= 1")]
    overrides = [parse_budget("kl_mean <= 0.05"), parse_budget("top1 >= 0.9")]
    assert merge_budgets(defaults, overrides) == (
        Budget("repetition", "<=", 0.35), Budget("kl_mean", "<=", 0.05),
        Budget("top1", ">=", 0.9),
    )
    assert merge_budgets(defaults, []) == tuple(defaults)
    assert merge_budgets([], overrides) == tuple(overrides)


def test_violations_only_report_present_metrics_out_of_bounds() -> None:
    """Absent metrics and None values are not violations; nan is."""
    budgets = [parse_budget(t) for t in
               ("kl_mean <= 0.05", "top1 >= 0.9", "repetition <= 0.35", "delta_p >= -0.1")]
    found = violations(
        budgets, {"kl_mean": 0.2, "top1": 0.95, "repetition": None, "first_divergence": 0.0}
    )
    assert found == [Violation(budgets[0], 0.2)]
    nan = violations(budgets, {"top1": math.nan})
    assert len(nan) == 1
    assert nan[0].budget == budgets[1]
    assert math.isnan(nan[0].value)
    assert violations(budgets, {}) == []


# --------------------------------------------------------------------------- constraint checkers


def test_contains_and_not_contains() -> None:
    """Case-insensitive by default (casefold: 'STRASSE' contains 'straße'), exact on request."""
    assert build_checker({"check": "contains", "value": "Morgen"}).check("guten morgen").ok
    assert build_checker({"check": "contains", "value": "straße"}).check("STRASSE").ok
    strict = build_checker({"check": "contains", "value": "Morgen", "case_sensitive": True})
    outcome = strict.check("guten morgen")
    assert not outcome.ok
    assert outcome.detail == "missing 'Morgen'"
    assert strict.check("Guten Morgen").detail == "found 'Morgen'"

    nc = build_checker({"check": "not_contains", "value": "Paris"})
    assert isinstance(nc, NotContains)
    assert nc.check("It is Berlin.").ok
    bad = nc.check("it is paris")
    assert not bad.ok
    assert bad.detail == "mentions 'Paris'"
    assert build_checker(
        {"check": "not_contains", "value": "Paris", "case_sensitive": True}
    ).check("paris").ok


def test_contains_any_counts_distinct_values_against_min() -> None:
    """At least ``min`` of the listed values must occur."""
    cities = build_checker(
        {"check": "contains_any", "values": ["Zurich", "Geneva", "Basel"], "min": 2}
    )
    assert cities.check("zurich and basel").ok
    one = cities.check("Only Zurich.")
    assert not one.ok
    assert "found 1 of >= 2" in one.detail
    assert build_checker({"check": "contains_any", "values": ["rail", "train"]}).check("Trains").ok
    with pytest.raises(ConfigError, match=r"must be in 1\.\.0"):  # no values: never met
        build_checker({"check": "contains_any", "values": []})


def test_regex_is_a_multiline_search() -> None:
    """re.search with MULTILINE: '^' anchors at any line, not only at the start."""
    r = build_checker({"check": "regex", "pattern": "^391$"})
    assert r.check("The answer:\n391\n").ok
    assert not r.check("3910").ok
    assert r.check("x").detail == "does not match /^391$/"
    scatter = build_checker({"check": "regex", "pattern": "(?i)scatter"})
    assert scatter.check("Rayleigh Scattering").ok


def test_word_count_bounds_are_inclusive() -> None:
    """Whitespace-separated words within [min, max], both ends included."""
    wc = build_checker({"check": "word_count", "min": 2, "max": 3})
    assert [wc.check(t).ok for t in ("one", "one two", "one  two\nthree", "a b c d")] == [
        False, True, True, False,
    ]
    assert wc.check("a b c d").detail == "4 words (allowed 2..3)"
    assert build_checker({"check": "word_count"}).check("").ok


def test_build_checker_errors_name_the_field() -> None:
    """Unknown checkers and parameters raise ConfigError with the field to point at."""
    with pytest.raises(ConfigError) as unknown:
        build_checker({"check": "word_cont"})
    assert unknown.value.field == "check"
    assert "did you mean 'word_count'" in str(unknown.value)
    with pytest.raises(ConfigError) as missing:
        build_checker({"value": "x"})
    assert missing.value.field == "check"
    with pytest.raises(ConfigError) as not_str:
        build_checker({"check": 3})
    assert not_str.value.field == "check"
    with pytest.raises(ConfigError) as param:
        build_checker({"check": "word_count", "maximum": 3})
    assert param.value.field == "maximum"
    assert "known: min, max" in str(param.value)
    with pytest.raises(ConfigError) as pattern:
        build_checker({"check": "regex", "pattern": "[a-"})
    assert pattern.value.field == "pattern"
    assert {"contains", "json_keys", "python_call", "word_count"} <= set(known_checkers())


def test_checker_describe_lists_its_parameters() -> None:
    """describe() is what failure messages show: the name and every parameter."""
    assert build_checker({"check": "contains", "value": "391"}).describe() == (
        "contains(value='391', case_sensitive=False)"
    )
    assert WordCount(max=40).describe() == "word_count(min=0, max=40)"


# --------------------------------------------------------------------------- fuzzing


def _toml_str(text: str) -> str:
    """A TOML basic string: printable ASCII kept, everything else escaped (TOML forbids raw
    control characters such as DEL, and JSON's surrogate-pair escapes are not TOML)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def _toml_value(v: Any) -> str:
    """A TOML literal for a JSON-like value (inline tables and arrays only)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # escaped by hand: TOML forbids raw control characters
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())


FUZZ_KEYS = [
    "name", "method", "bits", "bitz", "block_size", "levels", "scope", "part", "layers",
    "dtype", "quant_type", "threshold", "budgets", "steps", "expect", "description",
    "known_failures", "reference", "near_tie_epsilon", "settings", "config",
    "suite", "prompt", "id", "text", "checks", "check", "value", "values", "min", "max",
    "pattern", "case_sensitive", "chat_template", "max_new_tokens",
]
FUZZ_STRINGS = [
    "a", "baseline", "q2", "Bad Name", "", " ", "dtype", "blockwise", "blockwize", "bnb-4bit",
    "bnb-8bit", "float32", "bf16", "nf4", "fp4", "mlp", "attention", "full", "passes", "breaks",
    "kl_mean <= 0.05", "top1 >= 0.9", "repetition <= 0.35", "kl_men <= 1", "kl_mean = 1",
    "kl_mean <= inf", "test_drift[*]", "drift", "contains", "contains_any", "regex",
    "word_count", "not_contains", "(", "(?i)x", "hello", "tiny",
]


def _values(allow_nan: bool = True) -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.booleans(),
        st.integers(-2, 40),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=allow_nan),
        st.sampled_from(FUZZ_STRINGS),
        st.text(max_size=6),
    )
    return st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FUZZ_KEYS), inner, max_size=3),
        max_leaves=8,
    )


VALUES = _values()


def _dicts(obj: Any) -> list[dict[str, Any]]:
    """Every table in a document, outermost first."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        found.append(obj)
        for v in obj.values():
            found.extend(_dicts(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_dicts(v))
    return found


@st.composite
def _mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid document with up to three keys, anywhere in it, replaced, added or removed."""
    doc = json.loads(json.dumps(draw(valid)))  # deep copy: the seeds are shared
    for _ in range(draw(st.integers(0, 3))):
        tables = _dicts(doc)
        table = tables[draw(st.integers(0, len(tables) - 1))]
        own = st.sampled_from(sorted(table)) if table else st.nothing()
        key = draw(st.one_of(own, st.sampled_from(FUZZ_KEYS)))
        if draw(st.booleans()):
            table.pop(key, None)
        else:
            table[key] = draw(VALUES)
    return doc


def _random_docs(top_keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Documents with the right top-level names but arbitrary structure below them."""
    table = st.dictionaries(st.sampled_from(FUZZ_KEYS), VALUES, max_size=5)
    body = st.one_of(table, st.lists(table, max_size=3), VALUES)
    return st.fixed_dictionaries({}, optional={key: body for key in top_keys})


VALID_CONFIGS = [
    {"name": "baseline", "method": "dtype", "dtype": "float32"},
    {"name": "bf16", "method": "dtype", "dtype": "bf16", "budgets": ["kl_mean <= 0.05"]},
    {"name": "q2", "method": "blockwise", "bits": 2, "block_size": 32,
     "scope": {"part": "mlp", "layers": [0, 1]}},
    {"name": "nf4", "method": "bnb-4bit", "quant_type": "nf4", "expect": "breaks",
     "known_failures": ["test_drift[*]"], "description": "x"},
    {"name": "two-step", "steps": [{"method": "bnb-8bit"}, {"method": "eora", "rank": 4}]},
]
VALID_SETTINGS = [
    {"reference": "baseline", "near_tie_epsilon": 0.02, "budgets": ["repetition <= 0.35"]},
    {"reference": "q2"},
    {"budgets": ["min_tokens >= 1", "top1 >= 0.5"]},
]


@st.composite
def _valid_config_docs(draw: st.DrawFn) -> dict[str, Any]:
    configs = draw(st.lists(st.sampled_from(VALID_CONFIGS), min_size=1, max_size=4,
                            unique_by=lambda c: str(c["name"])))
    doc: dict[str, Any] = {"config": configs}
    if draw(st.booleans()):
        doc["settings"] = draw(st.sampled_from(VALID_SETTINGS))
    return doc


def config_docs() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        _mutated(_valid_config_docs()), _random_docs(["settings", "config"])
    )


VALID_PROMPTS = [
    {"id": "hello", "text": "Say hello.", "checks": [{"check": "contains", "value": "hello"}]},
    {"id": "capital", "text": "Capital of France?",
     "checks": [{"check": "contains_any", "values": ["Paris"], "min": 1},
                {"check": "word_count", "max": 50}]},
    {"id": "sky", "text": "Why is the sky blue?",
     "checks": [{"check": "regex", "pattern": "(?i)scatter"},
                {"check": "not_contains", "value": "green", "case_sensitive": True}]},
    {"id": "plain", "text": "Anything."},
]
VALID_SUITE_HEADS = [
    {"name": "tiny", "max_new_tokens": 8, "chat_template": False, "description": "d"},
    {"name": "calibration"},
]

@st.composite
def _valid_suite_docs(draw: st.DrawFn) -> dict[str, Any]:
    prompts = draw(st.lists(st.sampled_from(VALID_PROMPTS), min_size=1, max_size=4,
                            unique_by=lambda p: str(p["id"])))
    return {"suite": draw(st.sampled_from(VALID_SUITE_HEADS)), "prompt": prompts}


def suite_docs() -> st.SearchStrategy[dict[str, Any]]:
    docs = st.one_of(
        _mutated(_valid_suite_docs()), _random_docs(["suite", "prompt"])
    )
    return docs


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=5), _values(allow_nan=False), max_size=4))
def test_fuzz_toml_writer_roundtrips(doc: dict[str, Any]) -> None:
    """Guard for the fuzz tests: what they write is the document they meant."""
    assert tomllib.loads(to_toml(doc)) == doc


_FUZZ = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(config_docs())
def test_fuzz_load_configs_returns_configs_or_spec_error(
    tmp_path: Path, doc: dict[str, Any]
) -> None:
    """Whatever the file holds, the loader returns a ConfigSet or raises SpecError."""
    path = tmp_path / "configs.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    result = load_or_spec_error(load_configs, path)
    if result is None:
        return
    assert isinstance(result, ConfigSet)
    assert result.reference in result.names()
    assert len(set(result.names())) == len(result.configs) > 0


@_FUZZ
@given(suite_docs())
def test_fuzz_load_suite_returns_suite_or_spec_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    """Whatever the file holds, the loader returns a Suite or raises SpecError."""
    path = tmp_path / "suite.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    result = load_or_spec_error(load_suite, path)
    if result is None:
        return
    assert isinstance(result, Suite)
    assert len({p.id for p in result.prompts}) == len(result.prompts) > 0
    for prompt in result.prompts:
        for check in prompt.checks:
            assert isinstance(check.check(prompt.text).ok, bool)


def test_fuzz_bases_are_valid(tmp_path: Path) -> None:
    """The unmutated fuzz seeds load, so the fuzz reaches the success path too."""
    configs = tmp_path / "configs.toml"
    configs.write_text(to_toml({"settings": VALID_SETTINGS[0], "config": VALID_CONFIGS}))
    assert load_configs(configs).names() == ["baseline", "bf16", "q2", "nf4", "two-step"]
    suite = tmp_path / "suite.toml"
    suite.write_text(to_toml({"suite": VALID_SUITE_HEADS[0], "prompt": VALID_PROMPTS}))
    assert [p.id for p in load_suite(suite).prompts] == ["hello", "capital", "sky", "plain"]
