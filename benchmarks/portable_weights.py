"""Do calibrated weights come out the same on another machine? A hash per condition.

For each config (default: the shipped ones with a GPTQ or calibrated low-rank step) and each
stand-in for another machine (1, 2 and 3 threads; torch's AVX2 path; AVX-512 with AMX
capped off), a fresh process builds the config's calibrated tensors twice from nothing:

- pinned: the way a run does it, in a child process with pinned numerics
  (:mod:`shrinktests.run.portable`);
- native (``--native``): on the condition's own kernels, as every run did before.

and prints the sha256 of the tensors with the seconds it took. The pinned hashes must agree
across the conditions; the native ones show what they replace. Not a test: minutes per config.

    .venv/bin/python benchmarks/portable_weights.py [--configs gptq-4bit,nf4-eora] [--native]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CONDITIONS: dict[str, tuple[int, dict[str, str]]] = {
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "3 threads": (3, {}),
    "AVX2 path": (2, AVX2),
    "AMX capped": (2, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}),
}


def tensors_hash(tensors: dict[str, object]) -> str:
    import torch

    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        assert isinstance(t, torch.Tensor)
        h.update(key.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def child(config: str, threads: int, native: bool) -> None:
    """One condition: build the calibrated tensors from nothing and print their hash."""
    import torch

    from shrinktests.run import portable
    from shrinktests.run.options import RunRequest, resolve
    from shrinktests.run.variant import build_variant
    from shrinktests.session.session import ShrinkSession

    torch.set_num_threads(threads)
    session = ShrinkSession(resolve(RunRequest(
        root=ROOT, configs=ROOT / "suites" / "configs.toml", suites=(), model=None,
        cache=None, threads=threads, snapshots=ROOT / "snapshots", device="cpu")))
    inputs = session.inputs
    cfg = inputs.configs.get(config)
    calibration = inputs.calibration()
    start = time.perf_counter()
    if native:
        produced: dict[str, torch.Tensor] = {}
        build_variant(inputs.source, cfg, None, calibration, "cpu", produced=produced)
        tensors = dict(produced)
    else:
        tensors = portable.pinned_results(inputs.source, cfg, calibration, None)
    print(json.dumps({"hash": tensors_hash(dict(tensors)), "tensors": len(tensors),
                      "seconds": round(time.perf_counter() - start, 1)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="gptq-4bit,nf4-eora,mixed-gptq-eora")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--native", action="store_true", help="also the native computation")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "THREADS", "MODE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "native")
        return 0
    modes = ["pinned", "native"] if args.native else ["pinned"]
    print(f"{'config':<18} {'condition':<12} {'mode':<7} {'hash':<17} {'tensors':>7} "
          f"{'seconds':>8}", flush=True)
    for config in args.configs.split(","):
        for condition in args.conditions.split(","):
            threads, env = CONDITIONS[condition]
            for mode in modes:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", config, str(threads), mode],
                    env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, cwd=ROOT,
                    capture_output=True, text=True, check=False)
                if done.returncode:
                    print(f"{config:<18} {condition:<12} {mode:<7} failed: "
                          f"{done.stderr[-800:]}", flush=True)
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{config:<18} {condition:<12} {mode:<7} {r['hash']:<17} "
                      f"{r['tensors']:>7} {r['seconds']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
