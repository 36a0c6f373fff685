"""Batched greedy generation and teacher-forced scoring.

Batching (left padding) is several times faster than one prompt at a time on CPU: on the
constraints suite, 2 cores, 110 against 22 tok/s. The engine runs its own loop over the
model's forward: finished rows leave the batch and only the top-k log-probs are kept, 1.35 to
1.42 times raw batched ``model.generate`` on answers that stop (see benchmarks/engine.py). A
suite is always generated as the same fixed chunks, whatever ``-k`` selected, so a subset run
reproduces the full run's outputs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shrinktests.core.generation import Generation

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class DecodingSettings:
    """Everything that determines a greedy output besides model, config and prompt."""

    max_new_tokens: int
    chat_template: bool
    top_k: int = 5
    #: force a fixed workload (throughput measurements); 0 lets answers stop at end-of-sequence
    min_new_tokens: int = 0
    batch_size: int = 16

    def key(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"greedy, max_new_tokens={self.max_new_tokens}, "
                f"chat_template={'yes' if self.chat_template else 'no'}")


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int
    prompt_seconds: float
    new_tokens: int
    generate_seconds: float

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0

    @property
    def generate_tps(self) -> float:
        return self.new_tokens / self.generate_seconds if self.generate_seconds else 0.0

    def __add__(self, other: Timings) -> Timings:
        return Timings(
            self.prompt_tokens + other.prompt_tokens,
            self.prompt_seconds + other.prompt_seconds,
            self.new_tokens + other.new_tokens,
            self.generate_seconds + other.generate_seconds,
        )


ZERO_TIMINGS = Timings(0, 0.0, 0, 0.0)

#: the KV cache a batch may hold; within it, a whole suite is one batch (up to MAX_BATCH)
BATCH_MEMORY_BYTES = 1 << 30
MAX_BATCH = 64


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int = 4) -> int:
    """Bytes of KV cache one token takes in a decoder described by its ``config.json``."""
    layers = int(config.get("num_hidden_layers", 1))
    heads = int(config.get("num_attention_heads", 1))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config.get("hidden_size", heads) // heads)
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def batch_size_for(prompts: int, tokens_per_row: int, bytes_per_token: int,
                   budget: int = BATCH_MEMORY_BYTES, most: int = MAX_BATCH) -> int:
    """Rows per batch: as many as the KV-cache budget holds (a whole suite when it fits), then
    evened out so the chunks are equal. It depends only on the suite and the model, never on
    which tests ``-k`` selected, so a subset run reproduces the full run's batches."""
    fits = max(1, budget // max(1, tokens_per_row * bytes_per_token))
    rows = max(1, min(fits, most, prompts))
    chunks = -(-prompts // rows)
    return max(1, -(-prompts // chunks))


def render_prompt(tokenizer: PreTrainedTokenizerBase, text: str, chat: bool) -> list[int]:
    """Token ids of a prompt, through the model's chat template when asked and available."""
    if chat and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def _stop_ids(tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> set[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, list):
        ids.update(eos)
    return {i for i in ids if i is not None}


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class _FirstTokenClock:
    """A generate() streamer that only notes when the first new tokens arrive.

    transformers calls ``put`` once with the prompt ids, then once per decoding step.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


#: called as (rows still generating, steps done, max steps) after each decoding step
StepCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Prefix:
    """The start of a prompt's greedy output, already known: the steps where a teacher-forced
    pass showed this model's argmax to be the baseline's token. Generation resumes after it."""

    token_ids: tuple[int, ...]
    top_ids: npt.NDArray[np.int64]  # [len, k] this model's top-k at those steps
    top_logprobs: npt.NDArray[np.float32]
    #: the whole output is known (the model agreed with the baseline to its end)
    complete: bool = False
    #: with ``complete``: the output ends on an end-of-sequence token
    finished: bool = False


def known_prefix(base: Generation, top_ids: npt.NDArray[np.int64] | None,
                 top_logprobs: npt.NDArray[np.float32] | None) -> Prefix | None:
    """The start of a model's greedy output that a teacher-forced pass over the baseline's
    output ``base`` already shows: up to the first step where the model's argmax
    (``top_ids[:, 0]``) is not the baseline's token, greedy generation would pick the
    baseline's tokens. None when the pass gave no top-k (nothing is known)."""
    if top_ids is None or top_logprobs is None or len(top_ids) != len(base.token_ids):
        return None
    agree = top_ids[:, 0] == np.asarray(base.token_ids, dtype=np.int64)
    d = len(agree) if bool(agree.all()) else int(np.argmin(agree))
    complete = d == len(agree)
    return Prefix(tuple(base.token_ids[:d]), top_ids[:d], top_logprobs[:d], complete=complete,
                  finished=complete and base.finished)


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: DecodingSettings,
    on_step: StepCallback | None = None,
    prefixes: Sequence[Prefix | None] | None = None,
) -> tuple[list[Generation], Timings]:
    """Greedy-generate a continuation for every prompt, in fixed chunks of ``batch_size``;
    where ``prefixes`` gives the start of a prompt's output, only the rest is generated.
    A llama.cpp model generates every output whole, one prompt at a time: a prefix there
    would be evaluated as one batch where the full run decodes it token by token."""
    if getattr(model, "runs_itself", False):  # llama.cpp (shrinktests.run.llama_cpp)
        runner: Any = model
        gens_timings: tuple[list[Generation], Timings] = runner.generate(
            tokenizer, prompts, settings, _stop_ids(tokenizer, model), on_step)
        return gens_timings

    def run(start: int, chunk: Sequence[Sequence[int]]) -> tuple[list[Generation], Timings]:
        known = list(prefixes[start:start + len(chunk)]) if prefixes else None
        return _greedy_chunk(model, tokenizer, chunk, settings, on_step, known)

    return _in_chunks(prompts, settings.batch_size, run)


def _in_chunks(
    prompts: Sequence[Sequence[int]],
    batch_size: int,
    run: Callable[[int, Sequence[Sequence[int]]], tuple[list[Generation], Timings]],
) -> tuple[list[Generation], Timings]:
    """``run(start, chunk)`` over the fixed chunks of a suite; outputs in prompt order."""
    out: list[Generation] = []
    timings = ZERO_TIMINGS
    for start in range(0, len(prompts), batch_size):
        gens, t = run(start, prompts[start:start + batch_size])
        out.extend(gens)
        timings = timings + t
    return out, timings


def _greedy_chunk(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: DecodingSettings,
    on_step: StepCallback | None = None,
    prefixes: Sequence[Prefix | None] | None = None,
) -> tuple[list[Generation], Timings]:
    """One batch, greedy, over the model's own forward with a KV cache.

    The inputs of each forward are the ones ``model.generate`` builds (left padding, position
    ids from the attention mask, no mask when nothing is padded, logits of the last position
    only), so the logits are the same. Three things differ, and make it faster and leaner: a
    row that stopped leaves the batch (with its KV cache rows) instead of being carried to the
    longest answer; each step keeps only the top-k log-probs instead of the full vocabulary's
    logits; and a row with a known prefix starts after it.
    """
    import torch

    k = settings.top_k
    known = list(prefixes) if prefixes else [None] * len(prompts)
    empty = Prefix((), np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    pre = [p or empty for p in known]
    tokens: list[list[int]] = [list(p.token_ids) for p in pre]
    top_ids: list[list[Any]] = [list(p.top_ids) for p in pre]
    top_logp: list[list[Any]] = [list(p.top_logprobs) for p in pre]
    finished = [p.finished for p in pre]
    live = [i for i, p in enumerate(pre)
            if not p.complete and len(p.token_ids) < settings.max_new_tokens]
    prompt_tokens = 0
    first_token_at: float | None = None
    t0 = end = time.perf_counter()
    if live:
        pad_id = tokenizer.pad_token_id
        ids, mask = _left_pad([list(prompts[i]) + tokens[i] for i in live], pad_id)
        device = _model_device(model)
        ids, mask = ids.to(device), mask.to(device)
        prompt_tokens = int(mask.sum())
        stop = sorted(_stop_ids(tokenizer, model))
        stop_t = torch.tensor(stop, dtype=torch.long, device=device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        attention: torch.Tensor | None = None if bool((mask == 1).all()) else mask
        keep_last = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
        cache = growing_cache(model)
        rows = torch.tensor(live, device=device)  # batch row -> prompt index
        lengths = torch.tensor([len(tokens[i]) for i in live], device=device)
        step_input, step_pos = ids, positions
        most = settings.max_new_tokens
        shown = 0  # the step the progress line shows, never going back
        #: per step: the prompt index of each batch row, its token, top-k ids and log-probs
        steps: list[tuple[torch.Tensor, ...]] = []
        with torch.no_grad():
            t0 = time.perf_counter()
            while True:
                out = model(input_ids=step_input, attention_mask=attention,
                            position_ids=step_pos, past_key_values=cache, use_cache=True,
                            **keep_last)
                logits = out.logits[:, -1].to(dtype=torch.float32)
                top = torch.topk(logits, k=min(k, logits.shape[-1]), dim=-1)
                logp = top.values - torch.logsumexp(logits, dim=-1, keepdim=True)
                early = lengths < settings.min_new_tokens
                if stop and bool(early.any()):
                    logits[early.nonzero().squeeze(-1)[:, None], stop_t] = -float("inf")
                nxt = logits.argmax(dim=-1)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                lengths = lengths + 1
                stopped = (torch.isin(nxt, stop_t) if stop
                           else torch.zeros_like(nxt, dtype=torch.bool))
                ended = stopped | (lengths >= most)
                steps.append((rows, nxt, top.indices, logp))
                for i, tok, stop_now in zip(rows.tolist(), nxt.tolist(), stopped.tolist(),
                                            strict=True):
                    tokens[i].append(tok)
                    finished[i] = stop_now
                if on_step is not None:  # the longest row so far: rows that leave (a
                    shown = max(shown, int(lengths.max()))  # resumed one, say) keep it
                    on_step(int((~ended).sum()), shown, most)
                if bool(ended.all()):
                    break
                if bool(ended.any()):  # finished rows leave the batch, with their cache rows
                    keep = (~ended).nonzero().squeeze(-1)
                    cache.batch_select_indices(keep)
                    rows, nxt, step_pos = rows[keep], nxt[keep], step_pos[keep]
                    lengths = lengths[keep]
                    if attention is not None:
                        attention = attention[keep]
                if attention is not None:
                    attention = torch.cat([attention, attention.new_ones((len(rows), 1))],
                                          dim=-1)
                step_input = nxt[:, None]
                step_pos = step_pos[:, -1:] + 1
            end = time.perf_counter()
        for step_rows, _, step_ids, step_logp in steps:  # the top-k back into rows
            for j, i in enumerate(step_rows.tolist()):
                top_ids[i].append(step_ids[j])
                top_logp[i].append(step_logp[j])
    gens = []
    for i, prompt in enumerate(prompts):
        toks = tuple(tokens[i])
        gens.append(Generation(
            prompt_ids=tuple(prompt),
            token_ids=toks,
            text=str(tokenizer.decode(list(toks), skip_special_tokens=True)),
            finished=finished[i],
            top_ids=_stack(top_ids[i], k, np.int64),
            top_logprobs=_stack(top_logp[i], k, np.float32),
        ))
    # prompt eval = up to the first new token (the forward over the prompts); generation
    # tok/s = new tokens / the whole loop, as for model.generate
    prompt_seconds = (first_token_at or end) - t0
    new_tokens = sum(len(tokens[i]) - len(pre[i].token_ids) for i in range(len(prompts)))
    return gens, Timings(prompt_tokens, prompt_seconds, new_tokens, end - t0)


def growing_cache(model: torch.nn.Module) -> Any:
    """A ``DynamicCache`` for ``model`` whose full-attention layers keep keys and values in a
    buffer with room to spare. transformers' own layer concatenates the whole cache with each
    new token: at a batch of 32 that copy was a third of the profiled CPU time of a decoding
    run on 2 cores (under 1% after; wall time moved within run-to-run noise). The attention
    reads the same numbers either way, so the outputs are the same bit for bit."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states: torch.Tensor,
                                value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None
            self.length = 0

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
                   *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self.buffers is None or end > self.buffers[0].shape[-2]:
                room = max(2 * end, 64)  # doubling: copies stay a small share of the work
                keys = key_states.new_empty((*key_states.shape[:-2], room, key_states.shape[-1]))
                values = value_states.new_empty(
                    (*value_states.shape[:-2], room, value_states.shape[-1]))
                if self.length:
                    keys[..., :self.length, :] = self.keys  # type: ignore[assignment]
                    values[..., :self.length, :] = self.values  # type: ignore[assignment]
                self.buffers = (keys, values)
            assert self.buffers is not None
            self.buffers[0][..., self.length:end, :] = key_states
            self.buffers[1][..., self.length:end, :] = value_states
            self.length = end
            self.keys = self.buffers[0][..., :end, :]
            self.values = self.buffers[1][..., :end, :]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.buffers is not None and self.length:
                self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
                self.keys = self.buffers[0][..., :self.length, :]
                self.values = self.buffers[1][..., :self.length, :]

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("the engine never crops its cache")

    cache = DynamicCache(config=model.config)  # type: ignore[arg-type]
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer  # type: ignore[no-untyped-call]
                    for layer in cache.layers]
    return cache


def _stack(steps: list[Any], k: int, dtype: type) -> Any:
    """Per-step top-k rows (numpy rows of a prefix, then torch rows) as one [T, k] array."""
    import torch

    known = [s for s in steps if not isinstance(s, torch.Tensor)]
    new = [s for s in steps if isinstance(s, torch.Tensor)]
    parts = [np.asarray(known).reshape(len(known), -1)] if known else []
    if new:
        parts.append(torch.stack(new).cpu().numpy())
    if not parts:
        return np.zeros((0, k), dtype=dtype)
    return np.concatenate(parts).astype(dtype)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def generate_reference(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: DecodingSettings,
) -> tuple[list[Generation], Timings]:
    """The same chunks through transformers' ``model.generate`` (every row runs to the
    longest, full-vocabulary logits kept): what the engine is checked and timed against."""
    return _in_chunks(prompts, settings.batch_size,
                      lambda _, chunk: _generate_chunk(model, tokenizer, chunk, settings))


def _generate_chunk(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: DecodingSettings,
) -> tuple[list[Generation], Timings]:
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id
    ids, mask = _left_pad(prompts, pad_id)
    device = _model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    stop = _stop_ids(tokenizer, model)
    # An explicit config: the model's own generation_config may carry sampling or a
    # repetition penalty, which would make "greedy" mean something else per model.
    gen_config = GenerationConfig(
        do_sample=False, max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens, output_logits=True, return_dict_in_generate=True,
        num_beams=1, repetition_penalty=1.0, temperature=None, top_p=None, top_k=None,
        pad_token_id=pad_id, eos_token_id=sorted(stop), bos_token_id=tokenizer.bos_token_id,
    )
    clock = _FirstTokenClock()
    with torch.no_grad():
        t0 = time.perf_counter()
        result = model.generate(  # type: ignore[operator]  # nn.Module hides generate()
            input_ids=ids, attention_mask=mask, generation_config=gen_config, streamer=clock)
        end = time.perf_counter()
    # prompt eval = up to the first new token (one forward over the prompts), timed inside
    # the one generate call: no extra pass. Generation tok/s = new tokens / whole call.
    prompt_seconds = (clock.first_token_at or end) - t0
    generate_seconds = end - t0
    new = result.sequences[:, ids.shape[1]:].cpu()
    logits = torch.stack(result.logits, dim=1).float().cpu()  # [B, T, V]
    # top-k of the logits minus logsumexp = top-k log-probs, without a full log_softmax copy
    top = torch.topk(logits, k=min(settings.top_k, logits.shape[-1]), dim=-1)
    top_logp = top.values - torch.logsumexp(logits, dim=-1, keepdim=True)
    gens = []
    new_tokens = 0
    for i, prompt in enumerate(prompts):
        row = new[i].tolist()
        finished = False
        length = len(row)
        for j, tok in enumerate(row):
            if tok in stop:
                length, finished = j + 1, True
                break
        tokens = tuple(row[:length])
        new_tokens += length
        gens.append(Generation(
            prompt_ids=tuple(prompt),
            token_ids=tokens,
            text=str(tokenizer.decode(list(tokens), skip_special_tokens=True)),
            finished=finished,
            top_ids=top.indices[i, :length].numpy().astype(np.int64),
            top_logprobs=top_logp[i, :length].numpy().astype(np.float32),
        ))
    prompt_tokens = int(mask.sum())
    return gens, Timings(prompt_tokens, prompt_seconds, new_tokens, generate_seconds)


#: at most this many bytes of float32 logits per teacher-forced chunk: 8 rows of 129 slots of
#: a 49k vocabulary fit (203 MB), a 152k vocabulary takes 2 rows at a time instead of 8, so
#: the pass's memory does not grow with the vocabulary
LOGIT_BYTES = 256 * 2**20


def logit_chunks(order: Sequence[int], kept: Sequence[int], batch_size: int,
                 vocab: int) -> Iterator[list[int]]:
    """``order`` cut into consecutive chunks of at most ``batch_size`` rows whose logits
    (the longest row's ``kept`` slots × ``vocab`` × 4 bytes per row) stay within
    :data:`LOGIT_BYTES`; a row alone is never split."""
    chunk: list[int] = []
    for i in order:
        longest = max([kept[j] for j in chunk] + [kept[i]])
        if chunk and (len(chunk) == batch_size
                      or (len(chunk) + 1) * longest * vocab * 4 > LOGIT_BYTES):
            yield chunk
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk


#: runs one chunk of a teacher-forced pass: (chunk number, ids, mask, extra kwargs) -> logits
ChunkForward = Callable[[int, "torch.Tensor", "torch.Tensor", dict[str, Any]], "torch.Tensor"]


def continuation_logprobs(
    model: torch.nn.Module,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 8,
    by_length: bool = False,
    forward: ChunkForward | None = None,
) -> list[npt.NDArray[np.float32]]:
    """Teacher forcing: full-vocabulary log-probs [len(cont), V] predicting each given token.

    One forward pass per chunk over prompt + continuation (no sampling loop), which is why the
    teacher-forced drift metrics cost far less than a generation. ``by_length`` chunks the rows
    shortest first (less padding): less time, for callers that compare results only among
    themselves (the atlas); the chunking changes float rounding, so the drift tests keep the
    fixed order.
    """
    out: list[npt.NDArray[np.float32]] = [np.zeros((0, 0), dtype=np.float32)] * len(prompts)
    for i, logp in iter_continuation_logprobs(model, pad_id, prompts, continuations,
                                              batch_size, by_length, forward):
        out[i] = logp
    return out


def iter_continuation_logprobs(
    model: torch.nn.Module,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 8,
    by_length: bool = False,
    forward: ChunkForward | None = None,
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """:func:`continuation_logprobs` one prompt at a time, as (index, log-probs), so a caller
    that reduces each prompt to a few figures holds one chunk of full-vocabulary log-probs,
    not a whole suite's (hundreds of MB for a 49k vocabulary). ``forward`` replaces the plain
    ``model(...)`` call of each chunk (the atlas starts it at the layer it perturbed)."""
    import torch

    if getattr(model, "runs_itself", False):  # llama.cpp (shrinktests.run.llama_cpp)
        runner: Any = model
        yield from runner.logprobs(prompts, continuations)
        return
    device = _model_device(model)
    # logits over the continuation's slots only, not a [rows, prompt, vocabulary] block
    # nobody reads (on the shipped suites the same numbers bit for bit, and 30% less memory)
    tail_only = _accepts(model, "logits_to_keep")
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i])) if by_length else list(
        range(len(rows)))
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    kept = [len(continuations[i]) + 1 if tail_only else len(rows[i]) for i in range(len(rows))]
    for n_chunk, chunk in enumerate(logit_chunks(order, kept, batch_size, vocab)):
        ids, mask = _left_pad([rows[i] for i in chunk], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        kwargs: dict[str, Any] = {}
        if tail_only:  # the continuation occupies the last n slots; +1 predicts its first token
            kwargs["logits_to_keep"] = max(len(continuations[i]) for i in chunk) + 1
        with torch.no_grad():
            if forward is None:
                logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
            else:
                logits = forward(n_chunk, ids, mask, kwargs)
        logits = logits.float().cpu()
        kept = logits.shape[1]
        for j, i in enumerate(chunk):
            n = len(continuations[i])
            if n == 0:
                yield i, np.zeros((0, logits.shape[-1]), dtype=np.float32)
                continue
            # position t predicts token t+1: the continuation occupies the last n slots
            sl = logits[j, kept - n - 1: kept - 1]
            yield i, torch.log_softmax(sl, dim=-1).numpy()
        del logits
