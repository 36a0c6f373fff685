"""Resident memory of this process, for per-config memory figures in the benchmarks.

Linux lets a process reset its own peak-RSS counter (``/proc/self/clear_refs``), so the peak
can be taken per workload rather than over the whole run; elsewhere the process-lifetime
peak from ``getrusage`` is all there is, and the result says which one it is.
"""

from __future__ import annotations

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

