"""Resident memory of this process: per-config figures for the benchmarks, and memory given
back between configs.

Linux lets a process reset its own peak-RSS counter (``/proc/self/clear_refs``), so the peak
can be taken per workload rather than over the whole run; elsewhere the process-lifetime
peak from ``getrusage`` is all there is, and the result says which one it is.
"""

from __future__ import annotations

import functools
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the platform cannot (peak is then lifetime)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since the last :func:`reset_peak_rss` (or process start)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes
    return kb / 1024


@functools.cache
def freeze_imported_objects() -> None:
    """Take every object alive now out of the garbage collector's scans, once per process.

    Called before the first model loads, when what is alive is mostly imported modules (torch,
    transformers, pytest's plugins: about 420,000 objects). A full collection had to walk all
    of them, 0.25-0.4 s each time on 2 cores, and a run collects after every build, generation
    and teacher-forced pass (about 160 times for the shipped suites). Frozen objects are still
    freed when their reference count drops; only a cycle among them would now stay, and models,
    created later, are not frozen.
    """
    import gc

    gc.collect()
    gc.freeze()


def return_freed_memory() -> bool:
    """Collect garbage and hand the heap memory it frees back to the system.

    glibc keeps what freed tensors leave in its heaps (only blocks above its mmap threshold,
    which it raises as it goes, are unmapped at once), so a run that loads, compresses and
    drops one model after another grew from 1.7 to 5 GB resident while one compressed model
    was alive at a time. ``malloc_trim`` returns those pages; after a config is released the
    process is back to about the size it had before loading it. Returns whether any memory
    went back; where the C library has no ``malloc_trim`` (musl, macOS) only the collection
    runs.
    """
    import gc

    from shrinktests.core.heap import trim_heap

    gc.collect()
    return trim_heap()
