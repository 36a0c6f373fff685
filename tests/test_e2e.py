"""The shipped suites on the real default model, exactly as ``make suite`` runs them.

This is the end-to-end check that the committed snapshots still match, the shipped budgets
hold, and the positive control still breaks (its xfails are strict).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_suites(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-p", "no:cacheprovider",
         f"--shrink-cache={cache}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )


def test_shipped_suites_pass_on_the_default_model(fresh_cache: Path) -> None:
    cold = _run_suites(fresh_cache)
    assert cold.returncode == 0, cold.stdout[-6000:] + cold.stderr[-2000:]
    out = cold.stdout
    assert "snapshots passed" in out
    for row in ("baseline ", "bf16 ", "nf4 ", "broken-2bit "):
        assert any(line.startswith(row) for line in out.splitlines()), row
    assert "breaks (expected)" in out

    # a subset reproduces the full run's outputs: the snapshot of one prompt still matches
    # and nothing is generated again
    subset = _run_suites(fresh_cache, "-k", "snapshot and multiplication")
    assert subset.returncode == 0, subset.stdout[-3000:]
    assert "1 snapshot passed" in subset.stdout
    assert "generate calls this run: 0;" in subset.stdout
