"""Peak memory and phase times of a gate, on the default model and on bigger model shapes.

Not a test: a measurement (minutes per shape). For each model it runs, in subprocesses, what a
user runs on their own folder:

1. record the baseline: ``pytest suites/ --shrink-model DIR --snapshot-update -k baseline_snapshot``
2. gate three configs:  ``pytest suites/ --shrink-model DIR -k "[nf4- or [gguf-q4_0-"``
   (nf4, nf4-eora and gguf-q4_0), against the stored reference step 1 wrote

and samples the resident memory of the whole process tree (pytest and any child it starts)
every 0.1 s. Each shape starts on an empty results cache.

The bigger shapes are Qwen2 models with random weights built from a config on the spot:
behaviour is meaningless, memory and time are real. They use the default model's tokenizer
(ids it does not know decode to nothing) with the 151,936-token vocabulary of the real family,
since the vocabulary is what makes full-vocabulary logits expensive.

    .venv/bin/python benchmarks/memory.py [--shapes default,0.5b,1.5b] [--dtype float32|bfloat16]
        [--suite suites/calibration.toml] [--out benchmarks/memory.md]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GATE = "[nf4- or [gguf-q4_0-"
#: the phases a run times per config, in the order they happen
PHASES = ("load", "compress", "generate", "teacher-forced", "checks")

#: Qwen2 shapes: hidden, layers, heads, key/value heads, MLP width (vocabulary 151,936)
SHAPES = {
    "0.5b": (896, 24, 14, 2, 4864),
    "1.5b": (1536, 28, 12, 2, 8960),
}


@dataclass
class Step:
    name: str
    seconds: float
    peak_bytes: int
    returncode: int
    tail: str
    phases: dict[str, dict[str, float]]
    #: config -> (MB as shipped, bits per quantized weight), from the report
    sizes: dict[str, tuple[float, float | None]]


def build(shape: str, folder: Path, dtype: str) -> tuple[Path, int]:
    """A random-weight Qwen2 folder of ``shape`` (weights in ``dtype``), and its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from shrinktests.run.model import default_model_source

    hidden, layers, heads, kv, mlp = SHAPES[shape]
    config = Qwen2Config(vocab_size=151936, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv,
                         intermediate_size=mlp, tie_word_embeddings=False,
                         max_position_embeddings=4096, dtype=dtype)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    src = default_model_source().path
    for f in src.iterdir():  # the tokenizer files, not the weights or the config
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")) or \
                f.name == "generation_config.json":
            shutil.copy(f, folder / f.name)
    return folder, params


def sample_tree(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Largest sum of RSS over the process and its descendants, sampled every 0.1 s."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        peak[0] = max(peak[0], total)
        stop.wait(0.1)


def run_step(name: str, args: list[str], cache: Path, report: Path) -> Step:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SHRINKTESTS_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider",
           "--shrink-report", str(report), *args]
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_tree, args=(proc.pid, stop, peak), daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    data = report / "data.json"
    found = json.loads(data.read_text()) if data.exists() else {}
    phases = found.get("config_phases", {})
    sizes = {n: (m["mb"], m.get("quantized_bits")) for n, m in found.get("configs", {}).items()
             if m.get("mb")}
    tail = "\n".join(out.splitlines()[-3:])
    for line in out.splitlines():  # a random-weight model may fail; say which tests did
        if line.startswith(("FAILED", "ERROR")):
            print(f"[{name}] {line}", flush=True)
    print(f"[{name}] {seconds:.0f} s, peak {peak[0] / 2**30:.2f} GiB, exit {proc.returncode}: "
          f"{tail.splitlines()[-1] if tail else ''}", flush=True)
    return Step(name, seconds, peak[0], proc.returncode, tail, phases, sizes)


def measure(label: str, model_args: list[str], work: Path, extra: list[str]) -> list[Step]:
    cache = work / f"cache-{label}"
    snaps = work / f"snapshots-{label}"
    common = [*model_args, "--shrink-snapshots", str(snaps), *extra]
    record = run_step(f"{label} record", [*common, "--snapshot-update", "-k",
                                          "baseline_snapshot"], cache, work / f"r-{label}")
    gate = run_step(f"{label} gate", [*common, "-k", GATE], cache, work / f"g-{label}")
    return [record, gate]


def table(rows: list[tuple[str, float, list[Step]]]) -> str:
    lines = ["| model | float32 size | step | wall | peak RSS | peak / float32 | slowest phases |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, fp32, steps in rows:
        for s in steps:
            flat = sorted(((f"{c} {p}", t) for c, ph in s.phases.items() for p, t in ph.items()),
                          key=lambda kv: -kv[1])[:4]
            slow = ", ".join(f"{k} {t:.0f} s" for k, t in flat)
            lines.append(f"| {label} | {fp32 / 2**30:.2f} GiB | {s.name.split()[-1]} | "
                         f"{s.seconds:.0f} s | {s.peak_bytes / 2**30:.2f} GiB | "
                         f"{s.peak_bytes / fp32:.2f}× | {slow} |")
    lines += ["", "Every phase of every config, seconds (summed over the step's tests):", "",
              "| model | step | config | " + " | ".join(PHASES) + " |",
              "| --- | --- | --- |" + " --- |" * len(PHASES)]
    for label, _, steps in rows:
        for s in steps:
            for name, ph in s.phases.items():
                cells = " | ".join(f"{ph[p]:.1f}" if p in ph else "-" for p in PHASES)
                lines.append(f"| {label} | {s.name.split()[-1]} | {name} | {cells} |")
    lines += ["", "| model | config | MB as shipped | bits per quantized weight |",
              "| --- | --- | --- | --- |"]
    for label, _, steps in rows:
        for s in steps:
            for name, (mb, bits) in s.sizes.items():
                lines.append(f"| {label} | {name} | {mb:.0f} | "
                             f"{'-' if bits is None else f'{bits:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="default,0.5b,1.5b")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--suite", action="append", default=None,
                    help="suite file(s) to run instead of the shipped ones")
    ap.add_argument("--out", default=None, help="write the table to this markdown file")
    ns = ap.parse_args()
    extra = [a for s in ns.suite or [] for a in ("--shrink-suite", s)]
    work = Path(tempfile.mkdtemp(prefix="shrinktests-memory-"))
    rows = []
    try:
        for shape in ns.shapes.split(","):
            if shape == "default":
                from shrinktests.run.model import default_model_source, stored_param_count

                params = stored_param_count(default_model_source()) or 0
                rows.append(("default (135M)", params * 4.0, measure("default", [], work, extra)))
                continue
            folder, params = build(shape, work / f"model-{shape}", ns.dtype)
            print(f"built {shape}: {params / 1e6:.0f}M parameters ({ns.dtype})", flush=True)
            rows.append((f"{shape} random ({params / 1e6:.0f}M, {ns.dtype})", params * 4.0,
                         measure(shape, ["--shrink-model", str(folder)], work, extra)))
            shutil.rmtree(folder)
            print(table(rows), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(rows)
    print(text)
    if ns.out:
        Path(ns.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
