"""Replay of accepted outputs: equal, a near-tie flip, a clear-margin change (pure, no model)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shrinktests.accepted.record import AcceptedOutput
from shrinktests.accepted.replay import replay
from shrinktests.core.generation import Generation
from shrinktests.judging.metrics import first_divergence

EPS = 0.02


def _live(ids: Sequence[int], margins: Sequence[float] | None = None) -> Generation:
    """A live generation whose top-2 probabilities give the wanted margin at each step."""
    margins = margins if margins is not None else [0.5] * len(ids)
    top = np.array([[math.log(0.5 + m / 2), math.log(0.5 - m / 2)] for m in margins],
                   dtype=np.float32).reshape(len(ids), 2)
    return Generation(prompt_ids=(1,), token_ids=tuple(ids), text="", finished=False,
                      top_ids=np.zeros((len(ids), 2), dtype=np.int64), top_logprobs=top)


def _accepted(ids: Sequence[int], margins: dict[int, float] | None = None) -> AcceptedOutput:
    return AcceptedOutput("p", tuple(ids), "accepted text", True, margins or {})


def test_nothing_accepted_judges_this_run() -> None:
    r = replay(None, _live([1, 2]), EPS)
    assert (r.kind, r.judges_accepted) == ("unrecorded", False)


def test_the_same_output_is_judged_as_recorded() -> None:
    r = replay(_accepted([1, 2, 3], {1: 0.001}), _live([1, 2, 3]), EPS)
    assert (r.kind, r.step, r.judges_accepted) == ("same", None, False)


def test_a_flip_at_a_recorded_near_tie_judges_the_accepted_output() -> None:
    """The recording machine saw a margin of 0.004 at token 2; this one a clear one (it broke
    the tie the other way and went on confidently): still machine-dependent."""
    r = replay(_accepted([1, 2, 3, 4], {2: 0.004}), _live([1, 2, 9, 9], [0.5, 0.5, 0.3, 0.9]),
               EPS)
    assert (r.kind, r.step, r.judges_accepted) == ("machine", 2, True)
    assert r.margin == 0.004
    assert "token 2" in r.describe() and "0.0040" in r.describe()


def test_a_flip_at_a_near_tie_seen_only_here_judges_the_accepted_output() -> None:
    r = replay(_accepted([1, 2, 3]), _live([1, 7, 3], [0.5, 0.01, 0.5]), EPS)
    assert (r.kind, r.step) == ("machine", 1)
    assert abs((r.margin or 0) - 0.01) < 1e-5


def test_a_change_at_a_clear_margin_is_real_and_judges_this_run() -> None:
    r = replay(_accepted([1, 2, 3], {0: 0.001}), _live([1, 5, 6], [0.001, 0.4, 0.4]), EPS)
    assert (r.kind, r.step, r.judges_accepted) == ("changed", 1, False)
    assert "real change" in r.describe()


def test_an_answer_that_stops_early_is_compared_at_its_stop_token() -> None:
    """Both outputs carry their end-of-sequence token, so a shorter answer diverges where it
    stopped, at that step's margin."""
    r = replay(_accepted([1, 2, 3, 4]), _live([1, 2, 0], [0.5, 0.5, 0.015]), EPS)
    assert (r.kind, r.step) == ("machine", 2)


@given(st.lists(st.integers(0, 3), max_size=8), st.lists(st.integers(0, 3), max_size=8),
       st.floats(0, 0.99), st.floats(0, 0.99))
def test_the_kind_follows_the_first_divergence_and_the_smaller_margin(
    accepted: list[int], live: list[int], recorded: float, here: float,
) -> None:
    step = first_divergence(accepted, live)
    r = replay(_accepted(accepted, {step: recorded} if step < len(accepted) else {}),
               _live(live, [here] * len(live)), EPS)
    if accepted == live:
        assert r.kind == "same"
        return
    assert r.step == step
    known = ([recorded] if step < len(accepted) else []) + ([here] if step < len(live) else [])
    near = bool(known) and min(known) < EPS - 1e-6
    clear = not known or min(known) > EPS + 1e-6  # float32 log-probs round the live margin
    if near:
        assert r.kind == "machine"
    elif clear:
        assert r.kind == "changed"
