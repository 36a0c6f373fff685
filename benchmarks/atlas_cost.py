"""What one atlas scope costs: a teacher-forced pass against a greedy generation.

On the shipped atlas suites (``[settings.atlas] suites``) and the default model, for a few
scopes: the time of the atlas' measurement (swap in, one batched teacher-forced pass over the
baseline continuations, swap back) against regenerating the same continuations greedily with
the perturbed model, the way a generation-based sensitivity sweep would. Nothing is cached.

    .venv/bin/python benchmarks/atlas_cost.py [--scopes L00.mlp,L11.mlp,L29.attention]

Prints per scope both times and whether the first divergence read off the teacher-forced pass
agrees with the one the generation shows (it must: greedy decoding follows the baseline up to
the first step whose argmax differs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shrinktests.atlas.measure import parse_scope_id, swapped
    from shrinktests.atlas.run import AtlasRun
    from shrinktests.compression.context import StepContext
    from shrinktests.judging.metrics import first_divergence
    from shrinktests.run.engine import generate
    from shrinktests.run.model import cache_root
    from shrinktests.session.session import SessionOptions, ShrinkSession
    from shrinktests.spec.files import load_configs, load_suite, suite_files_beside

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scopes", default="L00.attention,L00.mlp,L11.mlp,L29.attention")
    args = parser.parse_args()
    configs_path = ROOT / "suites" / "configs.toml"
    configs = load_configs(configs_path)
    assert configs.atlas is not None, "suites/configs.toml has no [settings.atlas]"
    suites = tuple(load_suite(p) for p in suite_files_beside(configs_path))
    session = ShrinkSession(SessionOptions(
        model=None, configs=configs, suites=suites, cache_dir=cache_root(), threads=2,
        snapshot_dir=ROOT / "snapshots"))
    run = AtlasRun(session, configs.atlas, configs.atlas_budgets)
    start = time.perf_counter()
    atlas = run.atlas()
    print(f"baseline distributions recorded in {time.perf_counter() - start:.1f} s "
          f"({run.tokens} tokens of {', '.join(s.name for s in run.suites())})")
    method = configs.atlas.method
    model = atlas.model
    print(f"{'scope':14} {'forced s':>9} {'generate s':>10} {'ratio':>6} {'divergences agree':>18}")
    for scope_id in args.scopes.split(","):
        scope = parse_scope_id(scope_id)
        t0 = time.perf_counter()
        result = atlas.measure(method, scope)
        forced = time.perf_counter() - t0
        modules = list(scope.scope().linear_modules(model))
        t0 = time.perf_counter()
        free: list[int | None] = []
        with swapped(model, modules):
            method.apply_to(model, modules, StepContext())
            for suite in run.suites():
                gens, _ = generate(model, session.tokenizer, session._prompt_ids(suite),
                                   session.settings(suite))
                base = session.generations(session.reference.name, suite)
                for b, g in zip(base, gens, strict=True):
                    d = first_divergence(b.token_ids, g.token_ids)
                    free.append(None if d >= len(b.token_ids) else d)
        generated = time.perf_counter() - t0
        agree = sum(a == b for a, b in zip(free, result.drift.divergences, strict=True))
        print(f"{scope_id:14} {forced:9.2f} {generated:10.2f} {generated / forced:5.1f}x "
              f"{agree:>10}/{len(free)}")
    atlas.check_restored()
    print("restored model reproduces the baseline exactly")


if __name__ == "__main__":
    main()
