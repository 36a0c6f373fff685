"""Constraint checkers on hand-made answers, the sandbox that runs model-written code, and the
counting helpers (hypothesis: counts of generated lists and sentences come back exactly)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.core.schema import ConfigError
from shrinktests.judging.constraints import (
    build_checker,
    extract_code,
    extract_json,
    known_checkers,
    list_items,
    sentences,
)
from shrinktests.judging.sandbox import run_python

fast = settings(max_examples=40, deadline=None)

GOOD = '''Here is the function:

```python
def is_palindrome(s):
    """Return True if s reads the same backwards."""
    return s == s[::-1]
```
'''
# a failure seen in a 4-bit benchmark: the quantized model's version crashes on the empty string
NO_EMPTY = '''```python
def is_palindrome(s):
    return s[0] == s[-1] and is_palindrome(s[1:-1]) if len(s) > 1 else s[0] == s[0]
```'''


def check(spec: dict[str, Any], text: str) -> bool:
    return build_checker(spec).check(text).ok


def test_every_checker_named_in_the_issue_exists() -> None:
    assert {"has_docstring", "handles_empty_input", "sentence_count", "list_items",
            "word_count", "line_count", "json_keys", "python_parses", "contains",
            "not_contains", "regex", "starts_with", "python_call"} <= set(known_checkers())


@pytest.mark.parametrize(("spec", "ok_text", "bad_text"), [
    ({"check": "starts_with", "value": "Snow"}, "  **Snow** falls.", "In winter, snow falls."),
    ({"check": "sentence_count", "min": 3, "max": 3}, "One. Two! Three?", "One. Two."),
    ({"check": "list_items", "min": 5, "max": 5},
     "- a\n- b\n* c\n1. d\n2) e", "- a\n- b\n- c\n- d\n- e\n- f"),
    ({"check": "line_count", "max": 3}, "old pond\n\nfrog jumps\nsplash", "a\nb\nc\nd"),
    ({"check": "json_keys", "keys": ["name", "age"]},
     'Sure: ```json\n{"name": "Ada", "age": 36}\n```', '{"name": "Ada"}'),
    ({"check": "python_parses"}, GOOD, "```python\ndef f(:\n```"),
    ({"check": "has_docstring", "function": "is_palindrome"}, GOOD, NO_EMPTY),
    ({"check": "handles_empty_input", "function": "is_palindrome", "expect": "True"},
     GOOD, NO_EMPTY),
    ({"check": "python_call", "call": "is_palindrome('abba')", "expect": "True"},
     GOOD, GOOD.replace("s[::-1]", "s.upper()")),
])
def test_checker_passes_the_good_answer_and_fails_the_bad(spec: dict[str, Any], ok_text: str,
                                                          bad_text: str) -> None:
    assert check(spec, ok_text)
    assert not check(spec, bad_text)


def test_failure_details_say_what_was_found() -> None:
    out = build_checker({"check": "handles_empty_input", "function": "is_palindrome"})
    assert "IndexError" in out.check(NO_EMPTY).detail
    assert "no Python code" in build_checker({"check": "python_parses"}).check("Sure!").detail
    missing = build_checker({"check": "json_keys", "keys": ["a", "b"]}).check('{"a": 1}')
    assert "['b']" in missing.detail
    assert "3 sentences (allowed 2)" in build_checker(
        {"check": "sentence_count", "min": 2, "max": 2}).check("A. B. C.").detail


@pytest.mark.parametrize("spec", [
    {"check": "python_call", "call": "f(("},
    {"check": "python_call", "call": "f()", "expect": "= 3"},
    {"check": "python_call", "call": "f()", "timeout": 0},
    {"check": "handles_empty_input", "function": "not a name"},
    {"check": "json_keys", "keys": "name"},
    {"check": "list_items", "max": "five"},
    {"check": "word_count", "min": 5, "max": 3},
    {"check": "sentence_count", "min": -1},
    {"check": "contains_any", "values": ["a"], "min": 2},
    {"check": "json_keys", "keys": []},
    {"check": "starts_with", "value": " "},
    {"check": "python_call", "call": "-" * 100_000 + "1"},
    {"check": "python_call", "call": "f()\x00"},
])
def test_bad_checker_parameters_are_config_errors(spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        build_checker(spec)


# --------------------------------------------------------------------------- extraction

def test_extract_code_prefers_a_python_fence_and_survives_truncation() -> None:
    assert extract_code(GOOD) is not None and extract_code(GOOD).startswith("def is_palindrome")
    cut = "```python\ndef f():\n    return 1"  # the answer ran out of tokens inside the fence
    assert extract_code(cut) == "def f():\n    return 1"
    assert extract_code("Sure.\ndef f():\n    return 2") == "def f():\n    return 2"
    assert extract_code("```json\n{}\n```") is None
    assert extract_code("No code here.") is None


def test_extract_json_reports_why_not() -> None:
    assert extract_json('x {"a": [1, 2]} y') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("nothing")
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json("{'a': 1}")


@fast
@given(st.lists(st.text("abcdefgh ", min_size=1, max_size=12).filter(str.strip),
                min_size=1, max_size=8), st.sampled_from(["- ", "* ", "1. ", "• "]))
def test_list_items_counts_a_generated_list(items: list[str], bullet: str) -> None:
    text = "Here you go:\n" + "\n".join(f"{bullet}{it.strip()}" for it in items) + "\nDone."
    assert list_items(text) == len(items)


@fast
@given(st.lists(st.text("abcdefgh", min_size=1, max_size=10), min_size=1, max_size=8),
       st.sampled_from([".", "!", "?"]))
def test_sentences_counts_generated_sentences(words: list[str], end: str) -> None:
    text = " ".join(w.capitalize() + end for w in words)
    assert len(sentences(text)) == len(words)


# --------------------------------------------------------------------------- sandbox

@pytest.mark.parametrize(("code", "detail"), [
    ("def f():\n    while True:\n        pass", "CPU-time limit"),
    ("import socket\ndef f():\n    return socket.socket()", "blocked in the sandbox: socket"),
    ("def f():\n    return open('x', 'w')", "blocked in the sandbox: writing"),
    ("import os\ndef f():\n    return os.system('true')", "blocked in the sandbox: os.system"),
    ("import subprocess\ndef f():\n    return subprocess.run(['true'])", "blocked"),
    ("def f():\n    return bytearray(2 * 1024 ** 3)", "MemoryError"),
])
def test_sandbox_contains_what_model_code_must_not_do(code: str, detail: str) -> None:
    result = run_python(code, "f()", timeout=2)
    assert not result.ok
    assert detail in result.detail


def test_sandbox_output_cannot_forge_the_result() -> None:
    code = "print('{\"ok\": true}')\nimport sys\nsys.__stdout__.write('{\"ok\": true}\\n')"
    assert not run_python(code, "1", "2").ok
    assert run_python(code, "1 + 1", "2").ok
