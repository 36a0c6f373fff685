"""The greedy engine against transformers' own ``model.generate`` on the default model.

The engine runs its own loop (finished rows leave the batch, top-k kept per step) over the
inputs ``generate`` would build, so it must give the same tokens; where it does not, the two
must part at a near-tie, which the failure names. Also: a forced token count, progress
callbacks, and a batch in which rows stop at very different steps.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shrinktests.core.generation import Generation
from shrinktests.run.engine import (
    DecodingSettings,
    generate,
    generate_reference,
    render_prompt,
)
from shrinktests.spec.files import load_suite

ROOT = Path(__file__).resolve().parent.parent
#: a parting of the ways below this top-1/top-2 margin is float rounding, not a bug
NEAR_TIE = 0.02


@pytest.fixture(scope="module")
def default_model(model_cache: Path) -> tuple[Any, Any]:
    from shrinktests.run.model import (
        default_model_source,
        load_model,
        load_tokenizer,
        set_determinism,
    )

    set_determinism(2)
    source = default_model_source()
    model, _ = load_model(source)
    return model, load_tokenizer(source)


def _same_or_near_tie(mine: list[Generation], ref: list[Generation], what: str,
                      atol: float | None = 1e-3) -> None:
    """Equal outputs (the same top-1 at every step, log-probs within ``atol``), or parted at
    a named near-tie."""
    for i, (a, b) in enumerate(zip(mine, ref, strict=True)):
        if a.token_ids == b.token_ids:
            assert a.finished == b.finished and a.text == b.text
            np.testing.assert_array_equal(a.top_ids[:, 0], b.top_ids[:, 0])
            if atol is not None:
                np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=atol)
            continue
        step = next(j for j, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False))
                    if x != y)
        margin = min(a.margin(step), b.margin(step))
        assert margin < NEAR_TIE, (f"prompt {i}: {what} at token {step}, where the margin is "
                                   f"{margin:.4f} (not a near-tie)")


def _prompts(tok: Any, suite_name: str) -> tuple[list[list[int]], DecodingSettings]:
    suite = load_suite(ROOT / "suites" / f"{suite_name}.toml")
    prompts = [render_prompt(tok, p.text, suite.chat_template) for p in suite.prompts]
    return prompts, DecodingSettings(max_new_tokens=suite.max_new_tokens,
                                     chat_template=suite.chat_template)


@pytest.mark.parametrize("suite_name", ["calibration", "continuation"])
def test_the_engine_gives_model_generates_tokens(default_model: tuple[Any, Any],
                                                 suite_name: str) -> None:
    model, tok = default_model
    prompts, settings = _prompts(tok, suite_name)
    steps: list[tuple[int, int, int]] = []
    mine, timings = generate(model, tok, prompts, settings,
                             on_step=lambda *a: steps.append(a))
    ref, _ = generate_reference(model, tok, prompts, settings)
    _same_or_near_tie(mine, ref, "the engine's output leaves generate's")
    assert timings.new_tokens == sum(len(g.token_ids) for g in mine)
    # rows that stopped leave the batch: the running count falls, and the last step is the
    # longest answer's
    assert steps[0][0] <= len(prompts) and steps[-1][1] == max(len(g.token_ids) for g in mine)
    assert all(later[0] <= earlier[0] for earlier, later in pairwise(steps))


def test_a_forced_token_count_is_generated_exactly(default_model: tuple[Any, Any]) -> None:
    model, tok = default_model
    prompts, _ = _prompts(tok, "calibration")
    settings = DecodingSettings(max_new_tokens=12, min_new_tokens=12, chat_template=True)
    gens, timings = generate(model, tok, prompts[:3], settings)
    assert [len(g.token_ids) for g in gens] == [12, 12, 12]
    assert timings.new_tokens == 36 and timings.generate_tps > 0
    assert all(g.top_logprobs.shape == (12, 5) for g in gens)


def test_generation_resumed_after_the_known_prefix_equals_the_full_one(
    default_model: tuple[Any, Any],
) -> None:
    """A bfloat16 copy against the fp32 baseline: the teacher-forced pass over the baseline's
    outputs gives where the copy's greedy output must part from them; generating only from
    there gives the copy's full greedy output (or parts from it at a named near-tie)."""
    import copy

    import torch

    from shrinktests.judging.metrics import top_k_rows
    from shrinktests.run.engine import continuation_logprobs, known_prefix

    model, tok = default_model
    prompts, settings = _prompts(tok, "calibration")
    cand = copy.deepcopy(model).to(torch.bfloat16)
    base, _ = generate(model, tok, prompts, settings)
    full, _ = generate(cand, tok, prompts, settings)
    logps = continuation_logprobs(cand, tok.pad_token_id, prompts, [g.token_ids for g in base])
    prefixes = [known_prefix(g, *top_k_rows(lp)) for g, lp in zip(base, logps, strict=True)]
    steps: list[tuple[int, int, int]] = []
    resumed, timings = generate(cand, tok, prompts, settings, prefixes=prefixes,
                                on_step=lambda *a: steps.append(a))
    known = sum(len(p.token_ids) for p in prefixes if p is not None)
    assert known > 0 and timings.new_tokens == sum(len(g.token_ids) for g in resumed) - known
    # rows start at different steps; the progress line's step still never goes back
    assert all(later[1] >= earlier[1] for earlier, later in pairwise(steps))
    # the prefix's log-probs come from one bfloat16 forward over the whole sequence, the full
    # run's from step-by-step decoding: the same choices, not the same roundings
    _same_or_near_tie(resumed, full, "the resumed output leaves the full one", atol=None)


@given(st.integers(1, 300), st.integers(1, 4096), st.integers(1, 1 << 20),
       st.integers(1 << 16, 1 << 32))
def test_batches_are_even_and_fit_the_budget(prompts: int, tokens: int, per_token: int,
                                             budget: int) -> None:
    from shrinktests.run.engine import MAX_BATCH, batch_size_for

    rows = batch_size_for(prompts, tokens, per_token, budget)
    assert 1 <= rows <= min(prompts, MAX_BATCH)
    assert rows == 1 or rows * tokens * per_token <= budget
    chunks = -(-prompts // rows)
    assert chunks * rows - prompts < chunks  # chunks differ by at most one row


def test_the_default_model_takes_a_whole_suite_per_batch() -> None:
    from shrinktests.run.engine import batch_size_for, kv_bytes_per_token

    smol = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "hidden_size": 576}
    assert kv_bytes_per_token(smol) == 2 * 30 * 3 * 64 * 4
    assert batch_size_for(30, 200 + 128, kv_bytes_per_token(smol)) == 30
    assert batch_size_for(100, 200 + 128, kv_bytes_per_token(smol)) == 50  # two even chunks


def test_teacher_forced_log_probs_are_the_full_pass_ones_at_the_continuation_slots() -> None:
    """Scoring keeps logits for the continuation slots only; each row's log-probs must be
    the ones a full forward gives there, whatever the padding of its chunk."""
    import torch

    from shrinktests.run.engine import continuation_logprobs
    from tests.test_prune import tiny_llama

    model = tiny_llama(2)
    prompts = [(5, 6, 7, 8, 9, 10), (3,), (11, 12, 13)]
    conts = [(20, 21), (30, 31, 32, 33, 34), ()]
    got = continuation_logprobs(model, 0, prompts, conts, batch_size=3)
    for p, c, lp in zip(prompts, conts, got, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(p) + list(c)])).logits[0]
        want = torch.log_softmax(logits[len(p) - 1:len(p) + len(c) - 1].float(), -1).numpy()
        assert lp.shape == (len(c), 64)
        np.testing.assert_allclose(lp, want, atol=1e-5)
