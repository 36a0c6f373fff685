"""The harness's own cost: cache effectiveness, cold and warm wall time, scaling with prompts.

Runs ``pytest suites/`` in subprocesses on the default model, exactly as a user would, and
prints a table. Not a test: a measurement (minutes; the cold run dominates).

    .venv/bin/python benchmarks/harness.py [--skip-cold] [--scaling-configs baseline,bf16]

- cold: empty results cache (the converted model is reused), every config generates;
- warm: the same command again; everything comes from the results cache (target < 30 s);
- generate calls: must equal configs × prompt batches (one batched call per config and
  suite), however many checks read the results;
- scaling: a copy of the calibration suite with its prompts repeated 1×, 2×, 4×, run on a
  few configs, cold.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16  # DecodingSettings.batch_size


def run_suites(cache: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SHRINKTESTS_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-q", "-p",
                           "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return wall, proc.stdout


def generate_calls(out: str) -> int:
    m = re.search(r"generate calls this run: (\d+)", out)
    return int(m.group(1)) if m else -1


def summary_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith("=") or " passed" in ln]
    return lines[-1].strip("= ") if lines else "?"


def fresh_cache(model_cache: Path) -> Path:
    """An empty results cache that shares the converted model (no 20 s conversion per run)."""
    d = Path(tempfile.mkdtemp(prefix="shrinktests-bench-"))
    for sub in ("models", "hashes"):
        if (model_cache / sub).exists():
            (d / sub).symlink_to(model_cache / sub)
    return d


def scaled_suite(folder: Path, factor: int) -> Path:
    src = (ROOT / "suites" / "calibration.toml").read_text()
    data = tomllib.loads(src)
    lines = ["[suite]", 'name = "scaling"',
             f"max_new_tokens = {data['suite'].get('max_new_tokens', 48)}",
             f"chat_template = {str(data['suite'].get('chat_template', True)).lower()}"]
    for k in range(factor):
        for p in data["prompt"]:
            text = p["text"].replace('"""', "")
            lines += ["", "[[prompt]]", f'id = "{p["id"]}-{k}"', f'text = """{text}"""']
    path = folder / f"scaling-{factor}x.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cold", action="store_true", help="only warm and scaling runs")
    ap.add_argument("--scaling-configs", default="baseline,bf16")
    args = ap.parse_args()
    model_cache = Path(os.environ.get("SHRINKTESTS_CACHE",
                                      Path.home() / ".cache" / "shrinktests"))
    # make sure the model is converted once, outside every measurement
    run_suites(model_cache, "-k", "snapshot and multiplication", "--shrink-cache", "none")

    configs = tomllib.loads((ROOT / "suites" / "configs.toml").read_text())["config"]
    suites = [p for p in (ROOT / "suites").glob("*.toml") if p.name != "configs.toml"]
    batches = sum(math.ceil(len(tomllib.loads(p.read_text())["prompt"]) / BATCH) for p in suites)
    rows: list[tuple[str, str, str]] = []
    cache = fresh_cache(model_cache)
    try:
        if not args.skip_cold:
            wall, out = run_suites(cache)
            rows.append(("full suite, cold", f"{wall:.1f} s", summary_line(out)))
            rows.append(("generate calls (cold)", str(generate_calls(out)),
                         f"expected {len(configs)} configs x {batches} batches = "
                         f"{len(configs) * batches}"))
        wall, out = run_suites(cache)
        rows.append(("full suite, warm", f"{wall:.1f} s", summary_line(out)))
        rows.append(("generate calls (warm)", str(generate_calls(out)), "expected 0"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    keep = args.scaling_configs.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = folder / "configs.toml"
        text = (ROOT / "suites" / "configs.toml").read_text()
        # keep [settings] and the chosen configs only
        head, *blocks = text.split("[[config]]")
        chosen = [b for b in blocks
                  if (m := re.search(r'name = "([^"]+)"', b)) and m.group(1) in keep]
        cfg.write_text(head + "".join("[[config]]" + b for b in chosen))
        for factor in (1, 2, 4):
            suite = scaled_suite(folder, factor)
            cache = fresh_cache(model_cache)
            try:
                wall, out = run_suites(cache, f"--shrink-configs={cfg}", f"--shrink-suite={suite}",
                                       "-k", "not snapshot")
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            n = len(tomllib.loads(suite.read_text())["prompt"])
            rows.append((f"scaling: {n} prompts x {len(chosen)} configs, cold", f"{wall:.1f} s",
                         f"generate calls {generate_calls(out)}; {summary_line(out)}"))

    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>10}  {note}")


if __name__ == "__main__":
    main()
