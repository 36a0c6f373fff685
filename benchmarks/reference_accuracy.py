"""How far the stored top-k reference is from the live baseline, per shipped config.

Builds one session per mode on the shipped suites and configs and compares, per config, the
teacher-forced figures computed against the live baseline (full vocabulary) and against the
stored reference in ``snapshots/reference/``. Results come from the results cache when both
were computed before (after a live and a stored run), else they are computed (minutes).

    .venv/bin/python benchmarks/reference_accuracy.py [--configs nf4,bf16]

Prints, per config: mean KL live and stored, the worst per-prompt relative KL error, and
whether top-1 agreement, Δp and ln PPL ratio agree; then the file sizes per 1k tokens.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shrinktests.run.model import cache_root
    from shrinktests.session.session import SessionOptions, ShrinkSession
    from shrinktests.spec.files import load_configs, load_suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="", help="comma-separated (default: all)")
    args = parser.parse_args()
    configs = load_configs(ROOT / "suites" / "configs.toml")
    suites = tuple(load_suite(p) for p in sorted((ROOT / "suites").glob("*.toml"))
                   if p.name != "configs.toml")
    sessions = {mode: ShrinkSession(SessionOptions(
        model=None, configs=configs, suites=suites, cache_dir=cache_root(), threads=2,
        snapshot_dir=ROOT / "snapshots", reference=mode)) for mode in ("live", "stored")}
    names = [n for n in (args.configs.split(",") if args.configs else configs.names())
             if n != configs.reference]
    print(f"{'config':16} {'KL live':>8} {'stored':>8} {'rel':>7} {'worst':>7} "
          f"{'top-1 same':>10} {'max |dp|':>9} {'max |lnppl|':>11}")
    for name in names:
        live_kl = stored_kl = 0.0
        worst = 0.0
        same_top1 = True
        dp = lnppl = 0.0
        n = 0
        for suite in suites:
            live = sessions["live"].teacher_forced(name, suite)
            stored = sessions["stored"].teacher_forced(name, suite)
            for a, b in zip(live, stored, strict=True):
                live_kl += a.kl_mean
                stored_kl += b.kl_mean
                n += 1
                if a.kl_mean > 1e-4:
                    worst = max(worst, abs(b.kl_mean - a.kl_mean) / a.kl_mean)
                same_top1 &= bool(a.top1 == b.top1)
                dp = max(dp, abs(a.delta_p - b.delta_p))
                lnppl = max(lnppl, abs(a.ln_ppl_ratio - b.ln_ppl_ratio))
        rel = (stored_kl - live_kl) / live_kl if live_kl else 0.0
        print(f"{name:16} {live_kl / n:8.4f} {stored_kl / n:8.4f} {100 * rel:6.1f}% "
              f"{100 * worst:6.1f}% {same_top1!s:>10} {dp:9.2g} {lnppl:11.2g}", flush=True)
        for s in sessions.values():
            s.release(name)
    for suite in suites:
        ref = sessions["stored"].stored_reference(suite)
        if ref is not None:
            print(f"{suite.name}: {ref.size / 1024:.0f} KB for {ref.tokens} tokens = "
                  f"{ref.size / 1024 / ref.tokens * 1000:.0f} KB per 1k tokens")


if __name__ == "__main__":
    main()
