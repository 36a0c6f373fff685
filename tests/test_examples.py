"""The CI example stays runnable: valid YAML, and every pytest option it passes exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "release-gate.yml"


def test_release_gate_workflow_uses_only_real_options() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["gate"]["steps"]
    script = "\n".join(s.get("run", "") for s in steps)
    assert "make install" in script and "pytest suites/" in script
    used = set(re.findall(r"(--(?:shrink|benchmark)-[a-z-]+)", script))
    assert {"--shrink-report", "--shrink-bench", "--benchmark-compare-fail"} <= used
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    missing = [opt for opt in sorted(used) if opt not in help_text]
    assert not missing, f"options the example uses but pytest does not know: {missing}"
