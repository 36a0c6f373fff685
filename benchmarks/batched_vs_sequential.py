"""How much faster is the harness's batched generation than a plain per-prompt loop?

Runs the calibration suite's prompts on the default model (fp32, greedy, fixed tokens) three
ways and prints tokens/s: shrinktests' engine (batched, left padding), a raw batched
``model.generate`` call, and a sequential ``model.generate`` loop. Not a test: a measurement.

    .venv/bin/python benchmarks/batched_vs_sequential.py [--tokens 48] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from shrinktests.run.engine import DecodingSettings, generate, render_prompt
from shrinktests.run.model import (
    default_model_source,
    load_model,
    load_tokenizer,
    set_determinism,
)
from shrinktests.spec import load_suite

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=2, help="prompt list repeated N times")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    set_determinism(args.threads)
    source = default_model_source()
    tok = load_tokenizer(source)
    model, load_s = load_model(source)
    suite = load_suite(ROOT / "suites" / "calibration.toml")
    prompts = [render_prompt(tok, p.text, True) for p in suite.prompts] * args.repeat
    # force a fixed workload: every row generates exactly --tokens tokens
    settings = DecodingSettings(max_new_tokens=args.tokens, chat_template=True,
                                min_new_tokens=args.tokens)

    # warm-up: the first generate call of a process pays one-time allocation costs
    generate(model, tok, prompts[:2], DecodingSettings(max_new_tokens=4, chat_template=True))
    rows = []
    t0 = time.perf_counter()
    gens, _ = generate(model, tok, prompts, settings)
    dt = time.perf_counter() - t0
    rows.append(("shrinktests engine (batched)", sum(len(g.token_ids) for g in gens), dt))

    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p[::-1]) for p in prompts], batch_first=True,
        padding_value=tok.pad_token_id).flip(1)
    mask = (torch.arange(ids.shape[1])[None, :] >= ids.shape[1] - torch.tensor(
        [len(p) for p in prompts])[:, None]).long()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                             pad_token_id=tok.pad_token_id)
    dt = time.perf_counter() - t0
    rows.append(("raw batched model.generate", (out.shape[1] - ids.shape[1]) * len(prompts), dt))

    t0 = time.perf_counter()
    n = 0
    with torch.no_grad():
        for p in prompts:
            out = model.generate(input_ids=torch.tensor([p]), do_sample=False,
                                 max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                 pad_token_id=tok.pad_token_id)
            n += out.shape[1] - len(p)
    rows.append(("sequential model.generate loop", n, time.perf_counter() - t0))

    print(f"default model, {len(prompts)} prompts x {args.tokens} tokens, "
          f"{args.threads} threads, load {load_s:.2f} s")
    seq_tps = rows[2][1] / rows[2][2]
    print(f"{'method':34} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs loop':>8}")
    for name, tokens, secs in rows:
        print(f"{name:34} {tokens:7d} {secs:8.2f} {tokens / secs:7.1f} "
              f"{tokens / secs / seq_tps:7.1f}x")


if __name__ == "__main__":
    main()
