"""llama.cpp as the engine of a config (``engine = "llama.cpp"``): the GGUF file users run,
under llama.cpp's own CPU kernels, through the ``llama-cpp-python`` binding.

A GGUF file dequantized into transformers carries llama.cpp's weight rounding but PyTorch's
arithmetic. llama.cpp's kernels for the block types (Q4_0 ... Q8_0, the K-quants) round the
*activations* to 8 bits before every dot product, and its float path sums in other orders:
drift of its own, which only this engine shows. Measured on the embedded SmolLM2-135M Q4_1
file, teacher-forced over 438 positions: mean KL 0.0044 (max 0.074) and top-1 agreement 0.982
against the same weights in transformers, more than casting the model to bf16 (KL 0.001).

The engine answers the same two questions as the transformers one, so every test, figure and
report reads it unchanged: greedy continuations with the top-k log-probs of each step
(argmax over llama.cpp's logits; the same stop tokens and minimum length), and full-vocabulary
log-probs at every position of a teacher-forced pass. Prompts are the tokenizer's ids, fed as
they are (the file's vocabulary is checked against the baseline's). One sequence at a time,
at the run's thread count; llama.cpp is deterministic at a fixed thread count and batch.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from shrinktests.compression.base import MethodUnavailable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from shrinktests.core.generation import Generation
    from shrinktests.run.engine import DecodingSettings, Timings
    from shrinktests.run.model import ModelSource
    from shrinktests.run.variant import Variant
    from shrinktests.spec.files import CompressionConfig

#: the binding's version this engine is tested with, and how to install it
BINDING = "llama-cpp-python==0.3.36"
INSTALL = ('CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip install ' + BINDING +
           "  (or: make install-llama; builds llama.cpp from source, about 5 minutes on 2 cores)")
#: context length of one sequence: the longest prompt plus its continuation must fit
N_CTX = 2048

StepCallback = Callable[[int, int, int], None]


def binding_version() -> str | None:
    """The installed binding's version, None when it is not installed (nothing is imported)."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


class LlamaCppModel(torch.nn.Module):
    """A GGUF file loaded by llama.cpp, standing where a transformers model stands in a
    variant. It holds no torch parameters; :mod:`shrinktests.run.engine` hands its calls to
    :meth:`generate` and :meth:`logprobs`."""

    #: the model folder's generation config: its end-of-sequence ids stop a continuation
    generation_config: Any = None
    #: :mod:`shrinktests.run.engine` hands generation and teacher forcing to the model itself
    runs_itself = True

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        if binding_version() is None:
            raise MethodUnavailable(f"engine llama.cpp needs the llama-cpp-python binding: "
                                    f"{INSTALL}")
        import llama_cpp

        self.path = path
        self.threads = threads
        # logits at every position (a teacher-forced pass reads them all); the seed is unused
        # (greedy is argmax here) but fixed; one thread count for prompts and decoding
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_batch=512,
                                   n_threads=threads, n_threads_batch=threads,
                                   logits_all=True, seed=0, verbose=False)
        self.n_vocab = int(self.llm.n_vocab())

    def _run(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` from an empty context (one sequence, positions from 0)."""
        if len(tokens) > N_CTX:
            raise ValueError(f"{len(tokens)} tokens do not fit llama.cpp's context of {N_CTX}")
        self.llm.reset()
        self.llm.eval(list(tokens))

    def logprobs(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                 ) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Teacher forcing: log-probs [len(cont), V] predicting each continuation token."""
        for i, (prompt, cont) in enumerate(zip(prompts, continuations, strict=True)):
            if not cont:
                yield i, np.zeros((0, self.n_vocab), dtype=np.float32)
                continue
            self._run(list(prompt) + list(cont))
            start = len(prompt) - 1  # position t predicts token t + 1
            logits = torch.from_numpy(np.array(self.llm.scores[start:start + len(cont)]))
            yield i, torch.log_softmax(logits.float(), dim=-1).numpy()

    def generate(self, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
                 settings: DecodingSettings, stop: set[int], on_step: StepCallback | None = None,
                 ) -> tuple[list[Generation], Timings]:
        """Greedy continuations, one prompt after the other, with each step's top-k."""
        from shrinktests.core.generation import Generation
        from shrinktests.run.engine import Timings

        stop_t = torch.tensor(sorted(stop), dtype=torch.long)
        k = min(settings.top_k, self.n_vocab)
        gens: list[Generation] = []
        prompt_tokens = new_tokens = 0
        prompt_seconds = total_seconds = 0.0
        for n, prompt in enumerate(prompts):
            start = time.perf_counter()
            self._run(prompt)
            first = time.perf_counter()
            tokens: list[int] = []
            ids: list[npt.NDArray[np.int64]] = []
            logps: list[npt.NDArray[np.float32]] = []
            finished = False
            while len(tokens) < settings.max_new_tokens:
                logits = torch.from_numpy(np.array(self.llm.scores[self.llm.n_tokens - 1]))
                top = torch.topk(logits, k=k)
                logp = top.values - torch.logsumexp(logits, dim=-1)
                if len(tokens) < settings.min_new_tokens and len(stop_t):
                    logits[stop_t] = -float("inf")
                nxt = int(logits.argmax())
                tokens.append(nxt)
                ids.append(top.indices.numpy().astype(np.int64))
                logps.append(logp.numpy().astype(np.float32))
                if on_step is not None:
                    on_step(len(prompts) - n, len(tokens), settings.max_new_tokens)
                if nxt in stop:
                    finished = True
                    break
                if len(tokens) < settings.max_new_tokens:
                    self.llm.eval([nxt])
            end = time.perf_counter()
            prompt_tokens += len(prompt)
            new_tokens += len(tokens)
            prompt_seconds += first - start
            total_seconds += end - start
            gens.append(Generation(
                prompt_ids=tuple(prompt), token_ids=tuple(tokens),
                text=str(tokenizer.decode(tokens, skip_special_tokens=True)), finished=finished,
                top_ids=np.stack(ids) if ids else np.zeros((0, k), np.int64),
                top_logprobs=np.stack(logps) if logps else np.zeros((0, k), np.float32)))
        return gens, Timings(prompt_tokens, prompt_seconds, new_tokens, total_seconds)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a llama.cpp model is run through shrinktests.run.engine, not called")


def gguf_file(config: CompressionConfig, source: ModelSource, cache: Path) -> Path:
    """The GGUF file a llama.cpp config runs: its ``gguf`` artifact; the model's own file
    (a config with no steps); or its one ``gguf`` step written as a file into the cache."""
    from shrinktests.compression.llamacpp import GgufQuant, write_gguf

    if config.artifact is not None:
        return config.artifact.path
    if source.gguf is None:
        raise MethodUnavailable(
            f"engine llama.cpp runs a GGUF file and the model under test ({source.label}) is "
            "a transformers folder: give the config gguf = \"file.gguf\" (llama.cpp's "
            "convert_hf_to_gguf.py writes one)")
    if not config.steps:
        return source.gguf
    step = config.steps[0]
    assert isinstance(step, GgufQuant)  # the configs file allows nothing else here
    out = cache / "gguf" / f"{source.fingerprint}-{config.fingerprint()}.gguf"
    if not out.exists():
        write_gguf(step, source.gguf, source.path, out)
    return out


def build_llama_variant(config: CompressionConfig, source: ModelSource, cache: Path,
                        reference_params: int | None, threads: int) -> Variant:
    """Load a config's GGUF file into llama.cpp. Its figures come from the file: bytes on
    disk, bits per weight against the baseline's parameter count, layers and parameters."""
    import gguf

    from shrinktests.run.variant import Variant, VariantStats

    if binding_version() is None:  # before writing a file nobody can run here
        raise MethodUnavailable(f"engine llama.cpp needs the llama-cpp-python binding: {INSTALL}")
    start = time.perf_counter()
    path = gguf_file(config, source, cache)
    compress_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model = LlamaCppModel(path, threads)
    if (gen := source.path / "generation_config.json").exists():  # the same stop tokens
        eos = json.loads(gen.read_text()).get("eos_token_id")
        model.generation_config = SimpleNamespace(eos_token_id=eos)
    load_seconds = time.perf_counter() - start
    reader = gguf.GGUFReader(path)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    layers = int(reader.fields[f"{arch}.block_count"].contents())
    params = sum(int(t.n_elements) for t in reader.tensors)
    on_disk = path.stat().st_size
    base_config = json.loads((source.path / "config.json").read_text())
    ref = reference_params or params
    return Variant(config, model, VariantStats(
        params=params, bytes=on_disk, bits_per_weight=8 * on_disk / ref,
        load_seconds=load_seconds, compress_seconds=compress_seconds,
        details={"artifact": {"kind": "gguf", "path": path.name, "on_disk": on_disk,
                              "layers": layers,
                              "baseline_layers": int(base_config.get("num_hidden_layers", 0)),
                              "params": params, "baseline_params": ref},
                 "engine": f"llama.cpp (llama-cpp-python {binding_version()}, "
                           f"{threads} thread{'s' if threads != 1 else ''})"}))
