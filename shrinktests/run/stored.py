"""The stored reference of each suite: when this run reads it, and recording it.

The file format and the teacher-forced comparison against it live in
:mod:`shrinktests.run.reference`; this part decides, per suite, whether the run uses the file
(``auto``: only when model, tokenizer, prompts and decoding match; ``stored``: required) and
says why in :attr:`StoredReferences.notes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinktests.core.generation import Generation
from shrinktests.run.cache import cache_key
from shrinktests.run.engine import iter_continuation_logprobs
from shrinktests.run.inputs import RunInputs
from shrinktests.run.progress import Progress
from shrinktests.spec.files import Suite

if TYPE_CHECKING:
    import torch

    from shrinktests.run.reference import StoredReference


class StoredReferences:
    def __init__(self, inputs: RunInputs) -> None:
        self.progress = Progress()
        self.inputs = inputs
        self.options = inputs.options
        self._stored: dict[str, StoredReference | None] = {}
        self._recorded: set[str] = set()
        #: why each suite uses a live reference in auto mode, or what was recorded
        self.notes: dict[str, str] = {}

    def path(self, suite: Suite) -> Path:
        return self.options.snapshot_dir / "reference" / f"{suite.name}.safetensors"

    def _header(self, suite: Suite, k: int) -> dict[str, Any]:
        from shrinktests.run.reference import FORMAT, tokenizer_hash

        inputs = self.inputs
        tok = inputs.tokenizer
        return {
            "format": FORMAT, "model": inputs.source.fingerprint,
            "reference": inputs.config_fp(inputs.configs.reference),
            "tokenizer": tokenizer_hash(tok.get_vocab(), tok.all_special_tokens),
            "decoding": inputs.settings(suite).key(),
            "prompts": cache_key("prompts", {"ids": inputs.prompt_ids(suite)}), "k": k,
        }

    def get(self, suite: Suite) -> StoredReference | None:
        """The suite's stored baseline distributions, when this run should use them.

        ``auto`` uses the file only when everything matches (else notes why and runs the
        baseline live); ``stored`` requires it, and tolerates another model fingerprint as
        long as tokenizer, prompts and decoding match (a candidate checkpoint gated against
        the recorded baseline).
        """
        from shrinktests.run.reference import ReferenceMismatch, load

        mode = self.options.reference
        if mode == "live" or self.options.record:
            return None
        if suite.name not in self._stored:
            path = self.path(suite)
            ref: StoredReference | None = None
            if not path.exists():
                if mode == "stored":
                    raise ReferenceMismatch(f"{path}: no stored reference; record one with "
                                            "pytest suites/ --snapshot-update")
                self.notes[suite.name] = "live (no stored reference)"
            else:
                ref = load(path)
                try:
                    ref.check(self._header(suite, int(ref.header.get("k", 0))),
                              strict_model=mode == "auto")
                except ReferenceMismatch as exc:
                    if mode == "stored":
                        raise
                    self.notes[suite.name] = f"live ({exc})"
                    ref = None
            if ref is not None:
                self.notes[suite.name] = (
                    f"stored ({ref.size / 1024:.0f} KB, {ref.tokens} tokens, top-"
                    f"{ref.header['k']})")
            self._stored[suite.name] = ref
        return self._stored[suite.name]

    def record(self, suite: Suite, base: Sequence[Generation], model: torch.nn.Module) -> Path:
        """Write the suite's stored reference from the live baseline's generations ``base``
        and its ``model`` (--snapshot-update); once per suite and run."""
        from shrinktests.run.reference import PromptParts, PromptReference, save, top_k

        path = self.path(suite)
        if suite.name in self._recorded:
            return path
        self._recorded.add(suite.name)
        k = self.inputs.configs.reference_top_k
        mass = self.inputs.configs.reference_mass
        # prompt by prompt, each reduced to its top-k sets at once: the suite's full-vocabulary
        # log-probs are never held together (1,389 tokens of a 152k vocabulary: 0.84 GB)
        parts: dict[int, PromptParts] = {}
        for i, lp in iter_continuation_logprobs(model, self.inputs.tokenizer.pad_token_id,
                                                [g.prompt_ids for g in base],
                                                [g.token_ids for g in base]):
            parts[i] = top_k(lp, k, mass)
            self.progress.status(f"recording the stored reference of {suite.name}: prompt "
                                 f"{len(parts)}/{len(base)}")
        self.progress.clear()
        prompts = [PromptReference(g.prompt_ids, g.token_ids, g.text, g.finished, *parts[i])
                   for i, g in enumerate(base)]
        size = save(path, {**self._header(suite, k), "mass": mass}, prompts)
        tokens = sum(len(g.token_ids) for g in base)
        self.notes[suite.name] = (
            f"recorded {path} ({size / 1024:.0f} KB for {tokens} tokens, "
            f"{size / 1024 / max(tokens, 1) * 1000:.0f} KB per 1k tokens)")
        return path


def stored_generations(ref: StoredReference) -> list[Generation]:
    """The baseline's greedy outputs as the stored reference holds them (top-5 per step)."""
    gens = []
    for p in ref.prompts:
        ids, logp = p.top(5)
        gens.append(Generation(prompt_ids=p.prompt_ids, token_ids=p.token_ids, text=p.text,
                               finished=p.finished, top_ids=ids, top_logprobs=logp))
    return gens
