"""Accepted regressions: the record's pure update rule, its file format, and the whole
accept → strict-xfail → refresh cycle through pytest on the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinktests.accepted import first_line, load, render, save, unused, update
from shrinktests.spec import SpecError
from tests.conftest import TWO_CONFIGS, ProjectMaker

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_update_refreshes_what_ran_and_keeps_what_did_not() -> None:
    old = {"nf4": {"test_a[nf4-x]": "old", "test_b[nf4-y]": "old"}, "int8": {"test_a[int8-x]": ""}}
    ran = {"nf4": ["test_a[nf4-x]", "test_c[nf4-z]"]}  # a -k subset: test_b did not run
    failing = {"nf4": {"test_c[nf4-z]": "lost a constraint"}}
    new = update(old, ran, failing)
    assert new == {"int8": {"test_a[int8-x]": ""},
                   "nf4": {"test_b[nf4-y]": "old", "test_c[nf4-z]": "lost a constraint"}}
    assert "int8" not in update(new, {"int8": ["test_a[int8-x]"]}, {})  # fixed: entry gone


def test_file_round_trips_with_comments_and_odd_names(tmp_path: Path) -> None:
    record = {"fp4-dq": {'test_constraint[fp4-dq-s.p-regex]': 'said "no"\\'},
              "a.b": {"test_drift[a.b-s.p]": ""}}
    path = tmp_path / "known_failures.toml"
    save(path, record)
    text = path.read_text()
    assert '  "test_constraint[fp4-dq-s.p-regex]",  # said "no"\\' in text
    assert '["a.b"]' in text
    assert load(path) == {k: dict.fromkeys(v, "") for k, v in record.items()}
    assert unused(load(path), ["fp4-dq", "nf4"]) == ["a.b"]
    assert render({}).startswith("# Behaviour tests")


@pytest.mark.parametrize(("content", "fragment"), [
    ('[nf4]\ntests = "test_x"\n', "field 'tests': must be a list"),
    ('[nf4]\ntests = []\nwhy = 1\n', "field 'why': unknown key"),
    ('[nf4\n', "not valid TOML"),
])
def test_a_bad_record_is_a_spec_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "known_failures.toml"
    path.write_text(content)
    with pytest.raises(SpecError, match=fragment.replace("[", r"\[")):
        load(path)


def test_first_line_is_one_line_without_what_the_test_name_says() -> None:
    assert first_line("\n  drift  of 'x'\n more") == "drift of 'x'"
    assert first_line("") == ""
    assert first_line("config 'nf4' lost a constraint the baseline meets on s.p: contains("
                      "value='391', case_sensitive=False): missing '391'\nprompt: ...") == (
        "lost contains(value='391'): missing '391'")
    assert first_line("drift of config 'nf4' on s.p exceeds its budget: top1 >= 0.9 but got "
                      "0.6") == "drift: top1 >= 0.9 but got 0.6"
    assert first_line("repetition loop in config 'nf4' on s.p: repetition <= 0.35 but got 0.9"
                      ) == "repetition loop: repetition <= 0.35 but got 0.9"


def test_accept_then_gate_then_refresh(shrink_project: ProjectMaker) -> None:
    """A regression is recorded, then xfails strictly; once fixed it XPASSes until refreshed."""
    strict = TWO_CONFIGS.replace('"kl_mean <= 0.05"', '"kl_max <= 0.0"')  # bf16 cannot meet it
    p = shrink_project(strict)
    p.runpytest_subprocess("suites", "-k", "snapshot", "--snapshot-update")
    failing = p.runpytest_subprocess("suites", "-k", "drift")
    failing.assert_outcomes(failed=2)

    accept = p.runpytest_subprocess("suites", "-k", "drift", "--shrink-accept-failures")
    assert accept.ret == 0
    accept.stdout.fnmatch_lines(["*recorded 2 known failures of 1 configs in *known_failures*"])
    record = (p.path / "snapshots" / "known_failures.toml").read_text()
    assert '"test_drift[bf16-tiny.hello]",  # drift: kl_max <= 0 but got' in record

    gated = p.runpytest_subprocess("suites", "-k", "drift")
    gated.assert_outcomes(xfailed=2)

    p = shrink_project(TWO_CONFIGS)  # the regression is fixed: strict XPASS asks for a refresh
    fixed = p.runpytest_subprocess("suites", "-k", "drift")
    fixed.assert_outcomes(failed=2)
    fixed.stdout.fnmatch_lines(["*XPASS(strict)*accepted regression*"])
    p.runpytest_subprocess("suites", "-k", "drift", "--shrink-accept-failures")
    assert "[bf16]" not in (p.path / "snapshots" / "known_failures.toml").read_text()
    p.runpytest_subprocess("suites", "-k", "drift").assert_outcomes(passed=2)
