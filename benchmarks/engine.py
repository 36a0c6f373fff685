"""How fast is shrinktests' greedy engine against transformers' own ``model.generate``?

Times, in one process on the default model (fp32, greedy), the constraints suite's 30 prompts:

- the engine (finished rows leave the batch, top-k kept per step);
- raw batched ``model.generate`` over the same chunks (every row runs to the longest one,
  full-vocabulary logits kept, as the engine did before);
- a sequential ``model.generate`` loop, one prompt at a time;

at batch 16 and 32, in two workloads: ``natural`` (answers stop at end-of-sequence, up to the
suite's 128 tokens: what a suite run does) and ``forced`` (exactly ``--tokens`` new tokens per
prompt: pure decoding speed, where leaving finished rows out cannot help). It also checks that
the engine's tokens equal generate's. Engine and ``model.generate`` run alternately,
``--repeat`` times each, and the table gives medians: single runs on a 2-core machine moved
by up to 20%. Not a test: a measurement.

    .venv/bin/python benchmarks/engine.py [--tokens 64] [--threads 2] [--repeat 3] [--no-loop]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from shrinktests.run.engine import DecodingSettings, generate, generate_reference, render_prompt
from shrinktests.run.model import default_model_source, load_model, load_tokenizer, set_determinism
from shrinktests.spec.files import load_suite

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64, help="new tokens in the forced workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-loop", action="store_true", help="skip the sequential loop (slow)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each way, alternated; the table gives medians")
    args = ap.parse_args()
    set_determinism(args.threads)
    source = default_model_source()
    tok = load_tokenizer(source)
    model, _ = load_model(source)
    suite = load_suite(ROOT / "suites" / "constraints.toml")
    prompts = [render_prompt(tok, p.text, suite.chat_template) for p in suite.prompts]
    generate(model, tok, prompts[:2], DecodingSettings(max_new_tokens=4, chat_template=True))

    rows: list[tuple[str, str, int, int, float, float]] = []
    for workload, new, forced in (("natural", suite.max_new_tokens, 0),
                                  ("forced", args.tokens, args.tokens)):
        for batch in (16, 32):
            settings = DecodingSettings(max_new_tokens=new, min_new_tokens=forced,
                                        chat_template=True, batch_size=batch)
            mine_times, ref_times = [], []
            for _ in range(args.repeat):  # alternated, so drift of the machine hits both
                t0 = time.perf_counter()
                mine, _ = generate(model, tok, prompts, settings)
                mine_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ref, _ = generate_reference(model, tok, prompts, settings)
                ref_times.append(time.perf_counter() - t0)
            t_mine, t_ref = statistics.median(mine_times), statistics.median(ref_times)
            print(f"{workload} batch {batch}: engine {_spread(mine_times)}, "
                  f"model.generate {_spread(ref_times)}", flush=True)
            same = sum(a.token_ids == b.token_ids for a, b in zip(mine, ref, strict=True))
            tokens = sum(len(g.token_ids) for g in mine)
            rows.append((workload, f"engine, batch {batch}", batch, tokens, t_mine, t_ref))
            rows.append((workload, f"model.generate, batch {batch}", batch, tokens, t_ref, t_ref))
            print(f"{workload} batch {batch}: same tokens {same}/{len(prompts)}", flush=True)
        if not args.no_loop:
            t0 = time.perf_counter()
            n = 0
            with torch.no_grad():
                for p in prompts:
                    out = model.generate(input_ids=torch.tensor([p]), do_sample=False,
                                         max_new_tokens=new, min_new_tokens=forced,
                                         pad_token_id=tok.pad_token_id)
                    n += out.shape[1] - len(p)
            dt = time.perf_counter() - t0
            rows.append((workload, "sequential model.generate loop", 1, n, dt, dt))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ndefault model, {len(prompts)} constraints prompts, {args.threads} threads, "
          f"medians of {args.repeat} alternated runs, peak RSS {peak:.0f} MB")
    print(f"{'workload':9} {'way':32} {'tokens':>7} {'seconds':>8} {'tok/s':>7} "
          f"{'vs generate':>11}")
    for workload, name, _, tokens, secs, ref_secs in rows:
        print(f"{workload:9} {name:32} {tokens:7d} {secs:8.1f} {tokens / secs:7.1f} "
              f"{ref_secs / secs:10.2f}x")


def _spread(times: list[float]) -> str:
    return (f"median {statistics.median(times):.1f} s (min {min(times):.1f}, "
            f"max {max(times):.1f}, {len(times)} runs)")


if __name__ == "__main__":
    main()
