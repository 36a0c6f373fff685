"""A compact stored reference: the baseline's top-k log-probabilities beside the snapshots.

With it, drift of a compressed config is measured without loading the baseline model at all
(half the memory and no baseline forward passes), which is what a release gate holding only
the candidate needs. llama.cpp's ``--kl-divergence-base`` file keeps the full vocabulary
(gigabytes); shrinktests keeps, per suite and per step of the baseline continuation, the
``k`` most likely token ids (int32) with their log-probabilities (float16) and the probability
mass left outside them (float32): about 200 bytes per token at k = 32.

What is exact and what is approximated, per token, from the stored top-k set S:

- top-1 agreement, Δp of the baseline token and ln PPL ratio need only the baseline's most
  likely token and its probability, both in S: exact up to float16 rounding of log p
  (relative error of p below 1e-3 for the likely tokens);
- the rounded set is rescaled to the exact mass outside the rest (stored in float32), so the
  rounding moves probability only *within* the set and changes the KL to second order: near
  zero for a near-lossless config, where a first-order error would swamp a KL of 0.001;
- KL(base‖candidate) is computed over the coarsened distributions (S plus one "rest" bucket):
  ``Σ_{v∈S} p_v log(p_v/q_v) + p_rest log(p_rest/q_rest)``. By the log-sum inequality this is a
  lower bound of the full KL; the gap is exactly ``p_rest · KL(p|rest ‖ q|rest)``, the KL
  between the two distributions renormalised inside the rest, weighted by the baseline mass
  there. With k = 32 the rest holds a few percent of the baseline's mass at most, so the gap
  is small where the candidate keeps the baseline's ranking and largest where the candidate
  moves mass around inside the baseline's tail.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shrinktests.judging.metrics import FloatArray, TeacherForced, top_k_rows
from shrinktests.run.cache import atomic_writer

FORMAT = "2"  # k and mass come from [settings] reference_top_k / reference_mass


class ReferenceMismatch(ValueError):
    """The stored reference does not belong to this run (tokenizer, prompts or decoding)."""


@dataclass(frozen=True)
class PromptReference:
    """The baseline's continuation of one prompt and, at every step, its most likely tokens.

    Ragged: step ``t`` keeps ``counts[t]`` tokens (most likely first), ``ids`` and ``logp``
    are those sets concatenated, and ``rest[t]`` is the baseline mass outside step t's set.
    """

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    text: str
    finished: bool
    ids: npt.NDArray[np.int32]  # [N] flat
    logp: npt.NDArray[np.float16]  # [N] flat
    counts: npt.NDArray[np.int32]  # [T]
    rest: npt.NDArray[np.float32]  # [T]

    def steps(self) -> list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float16]]]:
        ends = np.cumsum(self.counts)
        return [(self.ids[e - n:e], self.logp[e - n:e])
                for n, e in zip(self.counts.tolist(), ends.tolist(), strict=True)]

    def top(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """[T, n] ids and log-probs of the ``n`` most likely tokens; where fewer were stored
        (the set already held all but ``rest`` of the mass) the gap is filled with id -1 and
        log(rest), an upper bound of the missing probabilities: margins stay lower bounds."""
        t = len(self.counts)
        ids = np.full((t, n), -1, dtype=np.int64)
        lp = np.empty((t, n), dtype=np.float32)
        lp[:] = np.log(np.maximum(self.rest, 1e-30))[:, None]
        for i, (sid, slp) in enumerate(self.steps()):
            m = min(n, len(sid))
            ids[i, :m], lp[i, :m] = sid[:m], slp[:m]
        return ids, lp


def top_k(base_logp: FloatArray, k: int, mass: float = 1.0) -> PromptParts:
    """Per row of a [T, V] log-prob array: the most likely tokens (at least 2, at most ``k``)
    until they hold ``mass`` of the probability, their log-probs as float16, and the exact
    probability outside them. ``mass = 1`` keeps exactly ``k`` per step."""
    b = np.asarray(base_logp, dtype=np.float64)
    k = max(1, min(k, b.shape[1]))
    order = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    lp = np.take_along_axis(b, order, axis=-1)
    cum = np.cumsum(np.exp(lp), axis=-1)
    counts = np.minimum((cum < mass).sum(axis=-1) + 1, k)
    counts = np.maximum(counts, min(2, k))
    keep = np.arange(k)[None, :] < counts[:, None]
    rest = np.clip(1.0 - np.where(keep, np.exp(lp), 0.0).sum(axis=-1), 0.0, 1.0)
    return (order[keep].astype(np.int32), lp[keep].astype(np.float16),
            counts.astype(np.int32), rest.astype(np.float32))


PromptParts = tuple[npt.NDArray[np.int32], npt.NDArray[np.float16], npt.NDArray[np.int32],
                    npt.NDArray[np.float32]]


def teacher_forced_stored(ref: PromptReference, cand_logp: FloatArray) -> TeacherForced:
    """Teacher-forced comparison of a candidate's [T, V] log-probs with the stored sets."""
    c = np.asarray(cand_logp)  # float32 from a model: only what is read is widened
    if not np.issubdtype(c.dtype, np.floating):
        c = c.astype(np.float64)
    t = len(ref.token_ids)
    if c.shape[0] != t or len(ref.counts) != t:
        raise ValueError(f"shape mismatch: {t} tokens, candidate {c.shape}, stored "
                         f"{len(ref.counts)} steps")
    tiny = np.finfo(np.float64).tiny
    kl = np.zeros(t)
    p_base = np.zeros(t)
    margin = np.ones(t)
    top1 = np.zeros(t, dtype=np.int64)
    for i, (sid, slp) in enumerate(ref.steps()):
        p = np.exp(slp.astype(np.float64))
        p_rest = float(ref.rest[i])
        p *= (1.0 - p_rest) / p.sum()  # the rounded set rescaled to its exact mass
        q = c[i, sid.astype(np.int64)].astype(np.float64)
        q_rest = max(1.0 - float(np.exp(q).sum()), float(tiny))
        rest_term = p_rest * (math.log(p_rest) - math.log(q_rest)) if p_rest > 0 else 0.0
        kl[i] = max(float((p * (np.log(np.maximum(p, tiny)) - q)).sum()) + rest_term, 0.0)
        hit = sid == ref.token_ids[i]
        # the baseline's own token is its greedy choice, so it is in the set; if a near-tie
        # resolved differently under teacher forcing, take the smallest stored probability
        p_base[i] = float(p[hit][0]) if hit.any() else float(p[-1])
        margin[i] = float(p[0] - (p[1] if len(p) > 1 else p_rest))
        top1[i] = int(sid[0])
    targets = np.asarray(ref.token_ids, dtype=np.int64)
    cand_ids, cand_logp = top_k_rows(cand_logp)
    return TeacherForced(
        kl=kl,
        top1_agree=c.argmax(axis=-1) == top1 if t else np.zeros(0, bool),
        p_base=p_base,
        p_cand=np.exp(c[np.arange(t), targets].astype(np.float64)) if t else np.zeros(0),
        base_margin=margin,
        cand_top_ids=cand_ids,
        cand_top_logp=cand_logp,
    )


def tokenizer_hash(vocab: dict[str, int], specials: Sequence[str]) -> str:
    """Fingerprint of a tokenizer: its vocabulary and special tokens."""
    blob = json.dumps([sorted(vocab.items()), sorted(specials)], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StoredReference:
    header: dict[str, Any]  # format, model, reference config, tokenizer, decoding, k, prompts
    prompts: tuple[PromptReference, ...]
    path: Path
    size: int  # bytes on disk

    @property
    def tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.prompts)

    def check(self, expected: dict[str, Any], *, strict_model: bool) -> None:
        """Raise :class:`ReferenceMismatch` naming the first field that differs. The model
        fingerprint is compared only when ``strict_model`` (a forced stored reference may
        gate another model that shares the tokenizer)."""
        fields = ["format", "tokenizer", "decoding", "prompts"] + (
            ["model", "reference"] if strict_model else [])
        for f in fields:
            if self.header.get(f) != expected.get(f):
                what = {"tokenizer": "the tokenizer differs: token ids would be compared "
                        "across vocabularies", "prompts": "the suite's prompts changed",
                        "decoding": "the decoding settings changed"}.get(f, f"{f} differs")
                raise ReferenceMismatch(f"{self.path}: {what} (stored {self.header.get(f)!r}, "
                                        f"this run {expected.get(f)!r}); re-record with "
                                        "--snapshot-update")


def save(path: Path, header: dict[str, Any], prompts: Sequence[PromptReference]) -> int:
    """Write the reference atomically as one safetensors file; returns its size in bytes."""
    from safetensors.numpy import save as to_bytes

    tensors: dict[str, npt.NDArray[Any]] = {}
    meta = []
    for i, p in enumerate(prompts):
        tensors[f"{i}.ids"] = np.ascontiguousarray(p.ids, dtype=np.int32)
        tensors[f"{i}.logp"] = np.ascontiguousarray(p.logp, dtype=np.float16)
        tensors[f"{i}.counts"] = np.ascontiguousarray(p.counts, dtype=np.int32)
        tensors[f"{i}.rest"] = np.ascontiguousarray(p.rest, dtype=np.float32)
        tensors[f"{i}.tokens"] = np.asarray(p.token_ids, dtype=np.int32)
        tensors[f"{i}.prompt"] = np.asarray(p.prompt_ids, dtype=np.int32)
        meta.append({"text": p.text, "finished": p.finished})
    blob = to_bytes(tensors, metadata={"shrinktests": json.dumps({**header, "outputs": meta})})
    with atomic_writer(path, binary=True) as f:
        f.write(blob)
    return len(blob)


def load(path: Path) -> StoredReference:
    from safetensors.numpy import load as from_bytes

    data = path.read_bytes()
    try:
        tensors = from_bytes(data)
        raw = json.loads(_metadata(data)["shrinktests"])
    except Exception as exc:
        raise ReferenceMismatch(f"{path}: not a shrinktests reference file ({exc})") from None
    outputs = raw.pop("outputs")
    prompts = tuple(
        PromptReference(
            prompt_ids=tuple(int(x) for x in tensors[f"{i}.prompt"]),
            token_ids=tuple(int(x) for x in tensors[f"{i}.tokens"]),
            text=o["text"], finished=bool(o["finished"]),
            ids=tensors[f"{i}.ids"], logp=tensors[f"{i}.logp"], counts=tensors[f"{i}.counts"],
            rest=tensors[f"{i}.rest"])
        for i, o in enumerate(outputs))
    return StoredReference(raw, prompts, path, len(data))


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta: dict[str, str] = header.get("__metadata__", {})
    return meta
