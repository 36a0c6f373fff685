"""Handing freed heap memory back to the system, from inside long loops.

glibc keeps the memory that freed tensors leave in its heaps: only blocks above its mmap
threshold are unmapped at once, and it raises that threshold (up to 32 MB) as large blocks
come and go. A loop that makes and drops a few MB per step (a dequantized weight, a
covariance, a layer's activations) leaves its heaps fragmented, and resident memory grows step
by step although little is alive. ``malloc_trim`` returns every free page. Building the
``nf4-eora`` config (210 layers corrected one after another) peaked at 2.6 GB resident without
it and 1.8 GB with a trim after each layer, in the same time.
"""

from __future__ import annotations

import functools
from typing import Any


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (a no-op where the C library has no
    ``malloc_trim``: musl, macOS). Returns whether any memory went back."""
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)
