"""Round-to-nearest against GPTQ at about 4.5 bits per linear weight, on the default model.

Runs every prompt of the shipped suites (and the throughput benchmark) on the configs of
``benchmarks/equal_bits.toml`` in a subprocess, exactly as a user would, then prints one
markdown table: bits per *linear* weight (the embeddings stay float32 in every config, so the
whole-model figure would hide the difference), size, mean KL and top-1 with their intervals,
loops and adherence against the baseline, and generation throughput. Not a test: a
measurement (about 15 minutes on 2 cores).

    .venv/bin/python benchmarks/equal_bits.py [--out DIR] [-- extra pytest args]

Failing budgets are expected here (these configs have no accepted records); the run's exit
status is not the point, its figures are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benchmarks" / "equal_bits.toml"


def linear_params() -> int:
    """Weights of the decoder layers' linear modules (what the methods quantize)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from shrinktests.run.model import default_model_source

    config = AutoConfig.from_pretrained(default_model_source().path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in n)


def _interval(values: list[Any] | None, fmt: str, scale: float = 1.0) -> str:
    if not values:
        return "-"
    value, low, high = (v * scale for v in values[:3])
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def table(data: dict[str, Any], linear: int) -> list[str]:
    configs, aggregates, bench = data["configs"], data["aggregates"], data["bench"]
    base_bytes = configs["baseline"]["mb"] * 1e6
    other = base_bytes - 4 * linear  # embeddings and norms, float32 in every config
    lines = ["| config | bits/linear w | MB | mean KL [95% CI] | top-1 [95% CI] | loops "
             "| loops +pts [CI] | adherence −pts [CI] | gen tok/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in configs.items():
        if name == "baseline":
            continue
        a = aggregates.get(name, {})
        bits = 8 * (m["mb"] * 1e6 - other) / linear if m["mb"] else None
        tps = bench.get(name, {}).get("generate_tps")
        tps_text = f"{tps:.1f}" if tps else "-"
        bits_text = f"{bits:.2f}" if bits else "-"
        lines.append(
            f"| {name} | {bits_text} | {m['mb']:.0f} | {_interval(a.get('mean_kl'), '.3f')} "
            f"| {_interval(a.get('mean_top1'), '.2f')} | {m['loops']}/{m['outputs']} "
            f"| {_interval(a.get('loop_increase'), '+.0f', 100)} "
            f"| {_interval(a.get('adherence_drop'), '+.0f', 100)} "
            f"| {tps_text} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: temp)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="equal-bits-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider",
               f"--shrink-configs={CONFIGS}", f"--shrink-report={out}", "--shrink-bench",
               *args.pytest_args]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, check=False)
    print(f"pytest exit {proc.returncode} after {time.perf_counter() - start:.0f} s "
          "(failing budgets are expected: no accepted records)", flush=True)
    data = json.loads((out / "data.json").read_text())
    print("\n".join(table(data, linear_params())))
    print(f"\nreport: {out}; numerics: {data['numerics']}")


if __name__ == "__main__":
    main()
