"""Replay: judge a config's accepted output when this machine's differs only by rounding.

Greedy decoding picks the most likely token at each step. When the top two are almost equally
likely, which one wins depends on the order in which a CPU adds up floats (its kernels, its
thread count), and after that step the two answers have nothing in common. A verdict read
from such text is a property of the machine, not of the config. So, per (config, prompt):

- this run's output equals the accepted one: judged as recorded;
- it leaves the accepted one first at a step where the config's top-1/top-2 probability
  margin (recorded, or this run's) is below ``replay_epsilon``: **machine-dependent**, the
  accepted output is judged, and the run says what this machine's own output would get;
- it leaves it at a clear margin: a **real change** (other weights, other kernels): this
  run's output is judged, so a new regression fails and a fixed one is an XPASS(strict).

``replay_epsilon`` (default 0.1) is wider than the baseline's ``near_tie_epsilon`` (0.02):
measured on the shipped configs, one thread instead of two moved outputs apart at margins up
to 0.043 (dynamic int8 activations round to other integers; an activation-aware low-rank
correction computes another SVD), and another CPU's kernels differ more than a thread count.
The teacher-forced figures are judged live whatever the replay says, so a change of weights or
kernels still shows in KL and top-1.

Pure functions of token ids and margins; the session applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shrinktests.accepted.record import AcceptedOutput
from shrinktests.core.generation import Generation
from shrinktests.judging.metrics import first_divergence

ReplayKind = Literal["unrecorded", "same", "machine", "changed"]


@dataclass(frozen=True)
class Replay:
    """How this run's output of one (config, prompt) relates to the accepted one."""

    kind: ReplayKind
    #: first step where this run's output leaves the accepted one
    step: int | None = None
    #: the smaller of the recorded and this run's top-1/top-2 margins at ``step``; None when
    #: neither is known to be below the recorded floor
    margin: float | None = None

    @property
    def judges_accepted(self) -> bool:
        """Whether the accepted output is the one to judge (a machine-dependent flip)."""
        return self.kind == "machine"

    def describe(self) -> str:
        if self.kind == "machine":
            return (f"leaves the accepted output at token {self.step}, top-2 margin "
                    f"{self.margin:.4f}: machine-dependent, the accepted output is judged")
        if self.kind == "changed":
            margin = f"{self.margin:.4f}" if self.margin is not None else "clear"
            return (f"leaves the accepted output at token {self.step} at a clear margin "
                    f"({margin}): a real change, this run's output is judged")
        return {"same": "equals the accepted output",
                "unrecorded": "no accepted output: this run's output is judged"}[self.kind]


def replay(accepted: AcceptedOutput | None, live: Generation, epsilon: float) -> Replay:
    """Compare this run's output with the accepted one (see the module docstring).

    The recorded margin at the divergence step is in ``accepted.margins`` when it was small;
    this run's margin comes from ``live``'s own top-k log-probabilities. Either one below
    ``epsilon`` makes the step a near-tie: the two machines may each see the other order.
    """
    if accepted is None:
        return Replay("unrecorded")
    if tuple(live.token_ids) == tuple(accepted.token_ids):
        return Replay("same")
    step = first_divergence(accepted.token_ids, live.token_ids)
    known = [m for m in (accepted.margins.get(step), _live_margin(live, step)) if m is not None]
    margin = min(known) if known else None
    if margin is not None and margin < epsilon:
        return Replay("machine", step, margin)
    return Replay("changed", step, margin)


def _live_margin(live: Generation, step: int) -> float | None:
    if not 0 <= step < len(live.token_ids) or live.top_logprobs.shape[1] < 2:
        return None
    return live.margin(step)
