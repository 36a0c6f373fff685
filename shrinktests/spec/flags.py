"""The options both front ends take, defined once.

pytest's ``--shrink-NAME`` and the ``python -m shrinktests`` commands' ``--NAME`` share their
names, help and parsing (``type=`` functions, so a bad value is refused the same way by
both). Each front end adds its own defaults and the options only it has. Imported when pytest
loads the plugin, in every run of an environment where shrinktests is installed: nothing
heavy here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def positive_int(value: str) -> int:
    """``type=`` for counts: an integer of at least 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def default_threads(workers: int = 1) -> int:
    """The CPUs shared out among ``workers`` processes, at most 4 and at least 1 each.

    Oversubscribed cores are slow, not just shared: on 2 cores a cold run of four configs
    took 205 s in one process at 2 threads, 557 s in two workers at 2 threads each (their
    threads wait on each other's time slices) and 140 s in two workers at one thread each.
    """
    return max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))


@dataclass(frozen=True)
class Flag:
    """One option: ``--shrink-<name>`` under pytest, ``--<name>`` on the command line."""

    name: str
    help: str
    metavar: str
    type: Callable[[str], Any] | None = None
    #: may be given several times (a list of values)
    repeat: bool = False
    #: the values it takes, when they are a few words
    choices: tuple[str, ...] | None = None
    #: a switch: no value, on when given
    switch: bool = False
    default: Any = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``argparse``'s and pytest's ``add_argument``/``addoption``."""
        if self.switch:
            return {"help": self.help, "action": "store_true", "default": False}
        out: dict[str, Any] = {"help": self.help, "default": self.default}
        if self.choices is not None:
            out["choices"] = self.choices
        else:
            out["metavar"] = self.metavar
        if self.type is not None:
            out["type"] = self.type
        if self.repeat:
            out["action"] = "append"
        return out


MODEL = Flag("model", "local Hugging Face causal LM folder (default: the embedded "
             "SmolLM2-135M-Instruct)", "PATH")
CONFIGS = Flag("configs", "compression configs file (default: suites/configs.toml)", "PATH")
SUITE = Flag("suite", "prompt suite file; repeat for several (default: every other *.toml "
             "beside the configs file, else beside suites/configs.toml)", "PATH", repeat=True)
CACHE = Flag("cache", "cache folder for converted models and results, or 'none' (default: "
             "$SHRINKTESTS_CACHE or ~/.cache/shrinktests)", "DIR")
DEVICE = Flag("device", "where models run: auto (CUDA when there is one), cpu, cuda or cuda:N "
              "(default: auto)", "DEVICE")
THREADS = Flag("threads", "torch CPU threads, fixed for repeatable results (default: the CPUs "
               "divided among the processes of the run, at most 4)", "N", positive_int)
#: the options every front end takes, in the order their help lists them
SHARED = (MODEL, CONFIGS, SUITE, CACHE, DEVICE, THREADS)
