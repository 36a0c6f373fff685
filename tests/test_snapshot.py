"""Parsing of the readable baseline snapshot format."""

from __future__ import annotations

from shrinktests.pytest_plugin.snapshot import recorded_token_ids, same_header

SNAP = """# shrinktests baseline snapshot, format 1
# model: M@abc
# decoding: greedy, max_new_tokens=8, chat_template=yes

## prompt
Say hi.

## output (3 tokens, end of sequence)
Hi!

## token ids
12 7 2
"""


def test_token_ids_are_read_back() -> None:
    assert recorded_token_ids(SNAP) == [12, 7, 2]
    assert recorded_token_ids(SNAP.replace("12 7 2", "")) == []


def test_unparseable_snapshots_give_none() -> None:
    assert recorded_token_ids("no ids here") is None
    assert recorded_token_ids(SNAP.replace("12 7 2", "12 x 2")) is None


def test_header_comparison_ignores_the_body() -> None:
    assert same_header(SNAP, SNAP.replace("Hi!", "Hello!"))
    assert not same_header(SNAP, SNAP.replace("M@abc", "M@def"))
