"""Degeneration of one output: named failure modes, each measured by a pure function.

The modes are the ones seen when pruning or quantizing 0.5B–8B models went too far: a
**repetition loop** (``"guten morgen"`` forever), **token soup** (mixed scripts, HTML
fragments, random capitals, non-words), **silence** (nothing at all), **truncation**
mid-sentence (the answer runs out of token budget) and **overshoot** (a list longer than
asked). Each mode has a metric with a budget in the configs file; :func:`evidence` finds the
span a failure message shows.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from shrinktests.judging.constraints import list_items
from shrinktests.judging.metrics import seq_rep_n

#: metric → failure mode it signals (the metric's budget decides when)
MODES: dict[str, str] = {
    "repetition": "repetition loop",
    "soup": "token soup",
    "min_tokens": "silence",
    "truncated": "truncation",
    "overshoot": "overshoot",
}

_WORD = re.compile(r"\S+")
_MARKUP = re.compile(
    r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,80})?/?>"  # <div>, </span>, <br/>
    r"|&(?:[a-z]{2,8}|#\d{2,5});"  # &nbsp; &#39;
    r"|<\|[^|<>]{1,30}\|>"  # <|im_start|> and other leaked special tokens
    r"|\[/?INST\]"
)
_CASE_OK = re.compile(r"[a-z]+|[A-Z]+|[A-Z][a-z]+|[a-z]{2,}(?:[A-Z][a-z]+)+|(?:[A-Z][a-z]+){2,}")
_VOWELS = set("aeiouyAEIOUY")
_CONSONANT_RUN = re.compile(r"[b-df-hj-np-tv-xzB-DF-HJ-NP-TV-XZ]{6,}")
_SENTENCE_DONE = re.compile(r"""[.!?…:;)\]}"'`*»”’]\s*$|```\s*$""")


def script(ch: str) -> str:
    """The Unicode script family of a letter, from its name (``LATIN``, ``CYRILLIC``, ``CJK``…)."""
    try:
        return unicodedata.name(ch).split()[0]
    except ValueError:
        return "UNKNOWN"


def dominant_script(text: str) -> str | None:
    counts = Counter(script(c) for c in text if c.isalpha())
    return counts.most_common(1)[0][0] if counts else None


def soup_words(text: str) -> list[str]:
    """Words that look like token soup: a letter from a script other than the text's dominant
    one, markup, irregular capitals (``tHe``, ``bAnAnA``; camelCase and CAPS are fine), or
    a Latin non-word (four or more letters without a vowel, or six consonants in a row)."""
    main = dominant_script(text)
    flagged = []
    for word in _WORD.findall(text):
        letters = "".join(c for c in word if c.isalpha())
        odd = bool(_MARKUP.search(word))
        if letters and not odd:
            odd = any(script(c) != main for c in letters)
        if letters.isascii() and letters and not odd:
            parts = re.findall(r"[A-Za-z]+", word)
            odd = any(not _CASE_OK.fullmatch(p) for p in parts)
            odd = odd or any(len(p) >= 4 and not set(p) & _VOWELS for p in parts)
            odd = odd or any(_CONSONANT_RUN.search(p) for p in parts)
        if odd:
            flagged.append(word)
    return flagged


def soup(text: str) -> float:
    """Share of words that look like token soup (:func:`soup_words`); 0.0 for no words.

    Fluent text in one script scores below 0.05 (proper names and code identifiers are
    the usual false positives); the "nonsense fragments in multiple scripts" and "HTML
    fragments, random caps" of an over-pruned 8B model score far higher.
    """
    words = _WORD.findall(text)
    return len(soup_words(text)) / len(words) if words else 0.0


def word_repetition_ratio(text: str, n: int = 3) -> float:
    """Repetition ratio over words: 1 − unique word n-grams / word n-grams (case-folded).

    The word-level twin of seq-rep-n, so it does not depend on the tokenizer: 0.0 when no
    three-word phrase occurs twice, near 1.0 for a loop (a published 8-bit/4-bit benchmark
    flags outputs whose repetition ratio crosses a threshold; 0.17 was fine, 0.73 was a loop).
    """
    words = [w.casefold() for w in _WORD.findall(text)]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def rep_l(tokens: Sequence[int], window: int = 16) -> float:
    """rep/ℓ (Welleck et al. 2019): share of tokens that already occur among the ``window``
    tokens before them, ``(1/T) Σ_t [x_t ∈ x_{t−ℓ..t−1}]``. 0.0 for an empty sequence."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    hits = sum(1 for t, tok in enumerate(tokens) if tok in tokens[max(0, t - window):t])
    return hits / len(tokens) if tokens else 0.0


def distinct_n(tokens: Sequence[int], n: int = 2) -> float:
    """distinct-n (Li et al. 2016): unique n-grams / n-grams; 1.0 when there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def truncated(text: str, finished: bool) -> bool:
    """The answer ran out of token budget in the middle of a sentence: it did not stop on
    an end-of-sequence token and its last character does not close a sentence, a clause,
    a quote or a code block."""
    return bool(text.strip()) and not finished and not _SENTENCE_DONE.search(text)


def overshoot(text: str, max_items: int | None) -> int:
    """List items beyond the ``max_items`` the prompt asked for (0 when none was asked)."""
    return max(0, list_items(text) - max_items) if max_items is not None else 0


@dataclass(frozen=True)
class Profile:
    """Every degeneration figure of one output (budgets apply to the first five)."""

    repetition: float  # seq-rep-4 over tokens
    soup: float
    tokens: int
    truncated: bool
    overshoot: int
    repetition_ratio: float  # word 3-grams
    rep_l: float
    distinct_2: float

    def values(self) -> dict[str, float | None]:
        return {
            "repetition": self.repetition, "soup": self.soup,
            "min_tokens": float(self.tokens), "truncated": float(self.truncated),
            "overshoot": float(self.overshoot), "repetition_ratio": self.repetition_ratio,
            "rep_l": self.rep_l, "distinct_2": self.distinct_2,
        }


def profile(text: str, tokens: Sequence[int], finished: bool,
            max_items: int | None = None) -> Profile:
    silent = not text.strip()
    return Profile(
        repetition=seq_rep_n(tokens, 4), soup=soup(text), tokens=0 if silent else len(tokens),
        truncated=truncated(text, finished), overshoot=overshoot(text, max_items),
        repetition_ratio=word_repetition_ratio(text), rep_l=rep_l(tokens),
        distinct_2=distinct_n(tokens, 2),
    )


def evidence(mode: str, text: str, max_items: int | None = None) -> str:
    """The span of ``text`` that shows ``mode``, for a failure message."""
    if mode == "silence":
        return f"the whole output is {text!r}"
    if mode == "repetition loop":
        words = _WORD.findall(text)
        grams = Counter(" ".join(words[i:i + 3]) for i in range(len(words) - 2))
        if grams:
            phrase, count = grams.most_common(1)[0]
            return f"{phrase!r} occurs {count} times"
        return f"{text[:80]!r}"
    if mode == "token soup":
        return f"odd words: {soup_words(text)[:8]}"
    if mode == "truncation":
        return f"ends with {text.rstrip()[-60:]!r}"
    if mode == "overshoot":
        items = [ln.strip() for ln in text.splitlines() if list_items(ln)]
        extra = items[max_items:] if max_items is not None else []
        return f"{len(items)} items where at most {max_items} were asked; extra: {extra[:4]}"
    return ""
