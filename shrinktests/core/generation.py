"""What one greedy generation produced: the record every layer passes along (the engine
writes it, the checks judge it, the accepted state stores and replays it, the cache pickles it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Generation:
    """One greedy continuation with what the generating model thought at each step."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    text: str
    finished: bool  # stopped on an end-of-sequence token rather than the token budget
    top_ids: npt.NDArray[np.int64]  # [T, k] most likely token ids per step
    top_logprobs: npt.NDArray[np.float32]  # [T, k] their log-probabilities

    def margin(self, step: int) -> float:
        """Top-1 minus top-2 probability at ``step`` (1.0 when out of range)."""
        if not 0 <= step < self.top_logprobs.shape[0] or self.top_logprobs.shape[1] < 2:
            return 1.0
        p = np.exp(self.top_logprobs[step, :2].astype(np.float64))
        return float(p[0] - p[1])
