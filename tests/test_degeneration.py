"""Degeneration modes: each metric on hand-made outputs of the kinds over-compressed models
produce, and hypothesis properties of the token-level measures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.core.generation import Generation
from shrinktests.judging.budgets import parse_budget
from shrinktests.judging.checks import degeneration, new_modes
from shrinktests.judging.degeneration import (
    distinct_n,
    evidence,
    overshoot,
    profile,
    rep_l,
    soup,
    soup_words,
    truncated,
    word_repetition_ratio,
)

tokens = st.lists(st.integers(0, 30), max_size=60)
fast = settings(max_examples=60, deadline=None)

FLUENT = ("The sky appears blue because air molecules scatter short wavelengths of sunlight "
          "more strongly than long ones. This is called Rayleigh scattering.")
CODE = ('```python\ndef is_palindrome(s: str) -> bool:\n    """Return True for palindromes."""\n'
        '    return s == s[::-1]\n```')


# --------------------------------------------------------------------------- token soup

@pytest.mark.parametrize("text", [FLUENT, CODE, "Guten Morgen! Zürich, Genève and Basel.",
                                  "Use numpy.ndarray or a camelCase name like isPalindrome.",
                                  "NASA and the EU agreed.", ""])
def test_fluent_text_and_code_are_not_soup(text: str) -> None:
    assert soup(text) < 0.05, soup_words(text)


@pytest.mark.parametrize(("text", "odd"), [
    ("пр ивет 世界 data Λόγος mañana", "Λόγος"),  # over-pruned 8B: fragments in multiple scripts
    ("<div class='x'> tHe rEsUlT </span> &nbsp; is", "tHe"),  # HTML fragments, random caps
    ("xkcdqz brtplm vvvvvv the", "xkcdqz"),  # non-words
])
def test_soup_flags_scripts_markup_caps_and_non_words(text: str, odd: str) -> None:
    assert soup(text) >= 0.5
    assert odd in soup_words(text)


def test_soup_of_a_single_foreign_word_in_english_is_small() -> None:
    assert soup(FLUENT + " In Japanese it is 青い.") < 0.1


# --------------------------------------------------------------------------- repetition

def test_word_repetition_ratio_separates_a_loop_from_prose() -> None:
    assert word_repetition_ratio(FLUENT) == 0.0
    loop = "guten morgen guten morgen guten morgen guten morgen guten morgen"
    assert word_repetition_ratio(loop) > 0.7
    # closed form for k repetitions of a 2-word phrase: 2 distinct trigrams of 2k - 2
    assert word_repetition_ratio("a b " * 10) == pytest.approx(1 - 2 / 18)


@fast
@given(tokens, st.integers(1, 20))
def test_rep_l_is_a_share(seq: list[int], window: int) -> None:
    assert 0.0 <= rep_l(seq, window) <= 1.0


@fast
@given(st.lists(st.integers(0, 30), unique=True, max_size=30))
def test_distinct_tokens_have_no_rep_l_and_full_distinct_n(seq: list[int]) -> None:
    assert rep_l(seq) == 0.0
    assert distinct_n(seq, 2) == 1.0


def test_rep_l_and_distinct_n_worked_examples() -> None:
    # [1 2 1 2 3]: the third and fourth tokens repeat within a window of 2
    assert rep_l([1, 2, 1, 2, 3], window=2) == pytest.approx(2 / 5)
    assert rep_l([1, 2, 3, 1], window=2) == 0.0  # 1 is three back: outside the window
    assert distinct_n([7, 7, 7, 7], 2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        distinct_n([1], 0)
    with pytest.raises(ValueError):
        rep_l([1], 0)


# --------------------------------------------------------------------------- truncation, overshoot

@pytest.mark.parametrize(("text", "finished", "expected"), [
    ("The sky appears blue due to a phenomenon known as", False, True),  # a pruned 8B
    ("The sky is blue.", False, False),
    ("The sky appears blue due to", True, False),  # the model chose to stop
    (CODE, False, False),
    ("   ", False, False),  # silence is its own mode
])
def test_truncation_is_running_out_of_tokens_mid_sentence(text: str, finished: bool,
                                                          expected: bool) -> None:
    assert truncated(text, finished) is expected


def test_overshoot_counts_items_beyond_the_asked_maximum() -> None:
    cities = "\n".join(f"{i}. City {i}" for i in range(1, 9))  # a pruned 8B: "long city list"
    assert overshoot(cities, 5) == 3
    assert overshoot(cities, None) == 0
    assert overshoot("- a\n- b", 5) == 0
    assert "City 6" in evidence("overshoot", cities, 5)


# --------------------------------------------------------------------------- modes and messages

def _gen(text: str, ids: list[int], finished: bool = True) -> Generation:
    import numpy as np

    return Generation((1,), tuple(ids), text, finished, np.zeros((len(ids), 2), np.int64),
                      np.zeros((len(ids), 2), np.float32))


BUDGETS = [parse_budget(b) for b in ("repetition <= 0.35", "soup <= 0.2", "min_tokens >= 1",
                                     "overshoot <= 0", "truncated <= 0")]


def test_each_mode_is_named_with_its_evidence() -> None:
    loop = degeneration(_gen("YES!!!! " * 12, [5, 6, 7, 8] * 12, finished=False), BUDGETS)
    assert loop.modes == ["repetition loop"]
    assert "occurs" in evidence("repetition loop", "YES!!!! " * 12)
    silent = degeneration(_gen(" ", []), [])  # silence needs no budget
    assert silent.modes == ["silence"]
    soupy = degeneration(_gen("<div> tHe rEsUlT </span>", list(range(8))), BUDGETS)
    assert soupy.modes == ["token soup"]
    cut = degeneration(_gen("Trains in Zurich, silent and", list(range(8)), False), BUDGETS)
    assert cut.modes == ["truncation"]
    many = degeneration(_gen("1. a\n2. b\n3. c", list(range(9))), BUDGETS, max_items=2)
    assert many.modes == ["overshoot"]


def test_only_modes_the_baseline_lacks_are_regressions() -> None:
    base = degeneration(_gen("The sky appears blue due to", list(range(6)), False), BUDGETS)
    cand = degeneration(_gen("blue blue blue blue " * 5, [3, 4] * 12, False), BUDGETS)
    assert set(cand.modes) == {"repetition loop", "truncation"}
    assert new_modes(cand, base) == ["repetition loop"]


def test_profile_reports_every_figure() -> None:
    p = profile(FLUENT, list(range(20)), True)
    assert set(p.values()) == {"repetition", "soup", "min_tokens", "truncated", "overshoot",
                               "repetition_ratio", "rep_l", "distinct_2"}
    assert p.values()["min_tokens"] == 20.0
