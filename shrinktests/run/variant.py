"""Apply a compression config to the model source: a :class:`Variant` plus what it cost."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shrinktests.compression.base import TensorError
from shrinktests.compression.context import StepContext, safetensors_lookup
from shrinktests.compression.dtype import DTYPES
from shrinktests.compression.measure import model_bytes, tensor_errors
from shrinktests.compression.mixed import weight_bits
from shrinktests.run.model import (
    ModelSource,
    load_candidate,
    load_model,
    load_tokenizer,
    weight_files,
)
from shrinktests.spec.files import Artifact, CompressionConfig

if TYPE_CHECKING:
    import torch


@dataclass
class VariantStats:
    """Size and cost figures recorded for every config (read by checks and reports)."""

    params: int = 0
    bytes: int = 0
    bits_per_weight: float = 0.0
    #: bits per weight of the linear weights the config changed, as stored (packed codes and
    #: scales): what "4-bit" means, without the embeddings and norms the whole-model figure
    #: mixes in. None where nothing was quantized or the original weights are unknown.
    quantized_bits: float | None = None
    load_seconds: float = 0.0
    compress_seconds: float = 0.0
    tensor_errors: dict[str, TensorError] = field(default_factory=dict)
    #: method-specific figures, e.g. layers/params before and after pruning, sparsity
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mb(self) -> float:
        return self.bytes / 1e6

    @property
    def mean_rel_error(self) -> float | None:
        if not self.tensor_errors:
            return None
        return sum(e.rel_fro for e in self.tensor_errors.values()) / len(self.tensor_errors)


@dataclass
class Variant:
    config: CompressionConfig
    model: torch.nn.Module
    stats: VariantStats


def build_variant(
    source: ModelSource,
    config: CompressionConfig,
    reference_params: int | None = None,
    calibration: Sequence[Sequence[int]] = (),
    device: str = "cpu",
    pinned: Mapping[str, torch.Tensor] | None = None,
    produced: dict[str, torch.Tensor] | None = None,
    progress: Callable[[str], None] | None = None,
    keep_dtype: str = "float32",
) -> Variant:
    """Load the source with the config's load-time options and apply its steps in order.

    ``reference_params`` (the uncompressed parameter count) turns bytes into bits per weight;
    without it the variant's own count is used. ``calibration`` (token ids of the suite
    prompts) is handed to activation-aware steps. Reconstruction error is measured once, at
    the end, against the source's own weights, so composed steps report their total error.
    ``pinned`` are tensors the calibrated steps computed under pinned numerics, taken instead
    of computing them here; ``produced`` collects what they compute (see
    :mod:`shrinktests.run.portable`). ``progress`` hears how far a long step is.
    ``keep_dtype`` is the reference's dtype: what no step quantized (embeddings, LM head,
    norms) is kept in it, as transformers keeps it when it loads a quantized model.
    """
    import torch

    for step in config.steps:
        step.check_environment()
    load_kwargs: dict[str, Any] = {}
    for step in config.steps:
        load_kwargs.update(step.load_kwargs())
    model, load_seconds = load_model(source, device, **load_kwargs)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    ctx = StepContext(
        originals=safetensors_lookup(source.path, tied),
        calibration=tuple(torch.tensor(list(ids), dtype=torch.long, device=device)
                          for ids in calibration),
        device=device,
        tokenize=_lazy_tokenize(source),
        pinned=pinned or {},
        produced=produced,
    )
    if progress is not None:
        ctx.progress = progress
    start = time.perf_counter()
    for ctx.step, step in enumerate(config.steps):
        model = step.apply(model, ctx)
    unquantized_to(model, keep_dtype)
    compress_seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    size = model_bytes(model, ctx.packed_bytes)
    errors = tensor_errors(model, ctx)
    stats = VariantStats(
        params=n_params,
        bytes=size,
        bits_per_weight=8 * size / (reference_params or n_params),
        load_seconds=load_seconds,
        compress_seconds=compress_seconds,
        tensor_errors=errors,
        details=ctx.stats,
        quantized_bits=_quantized_bits(model, list(errors), ctx.packed_bytes),
    )
    return Variant(config, model, stats)


def _quantized_bits(model: torch.nn.Module, changed: list[str],
                    packed: dict[str, int]) -> float | None:
    """Bits per weight of the changed linear weights (``name.weight``) as stored."""
    names = [k.removesuffix(".weight") for k in changed]
    try:
        return weight_bits(model, names, packed) if names else None
    except (AttributeError, KeyError):  # a wrapper without a weight of its own
        return None


#: modules of the quantization backends, whose parameters are theirs to keep
_BACKENDS = ("bitsandbytes", "torchao", "optimum", "gptqmodel")


def unquantized_to(model: torch.nn.Module, dtype: str) -> None:
    """Cast the float32 parameters no step quantized to ``dtype`` (the reference's), in place.

    Loading and compressing run in float32 (exact for a bf16 folder), so without this a
    compressed bf16 model would carry a float32 embedding and LM head: on a model with a
    152k-token vocabulary that made NF4 (1,291 MB) read bigger than bf16 (1,260 MB). Float
    buffers (the rotary frequencies) follow too, as they do in the reference's own cast: a
    bf16 and a float32 copy of the rotary frequencies alone moved logits by up to 0.75, a
    difference the comparison would have charged to the method.
    """
    import torch

    target = getattr(torch, DTYPES.get(dtype, "float32"))
    if target == torch.float32:
        return
    for module in model.modules():
        if type(module).__module__.startswith(_BACKENDS):
            continue
        for p in module.parameters(recurse=False):
            if type(p.data) is torch.Tensor and p.dtype == torch.float32:
                p.data = p.data.to(target)
        for name, b in module.named_buffers(recurse=False):
            if type(b) is torch.Tensor and b.dtype == torch.float32:
                setattr(module, name, b.to(target))


def _lazy_tokenize(source: ModelSource) -> Callable[[str], list[int]]:
    """The source's tokenizer as text → ids, loaded on first use (few methods need it)."""
    loaded: list[Any] = []

    def tokenize(text: str) -> list[int]:
        if not loaded:
            loaded.append(load_tokenizer(source))
        return list(loaded[0](text)["input_ids"])
    return tokenize


def build_artifact_variant(
    base: ModelSource,
    artifact: ModelSource,
    config: CompressionConfig,
    reference_params: int | None,
    base_vocab: dict[str, int],
    device: str = "cpu",
) -> Variant:
    """Load a ``checkpoint``/``gguf`` config's model as it is. Its figures come from the
    artifact: size on disk (what ships), bits per weight against the baseline's parameter
    count, layers and parameters beside the baseline's. Its tokenizer must be the baseline's,
    or the comparison would feed it other token ids; reconstruction errors are measured only
    when the layers line up with the baseline's."""
    import json


    assert config.artifact is not None
    kind = config.artifact.kind
    check_vocabulary(artifact, config.artifact, base_vocab)
    model, load_seconds = (load_candidate(artifact, device) if kind == "checkpoint"
                           else load_model(artifact, device))
    files = ([config.artifact.path] if kind == "gguf" else weight_files(artifact.path))
    on_disk = sum(f.stat().st_size for f in files)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    def layers(folder: ModelSource) -> int:
        cfg = json.loads((folder.path / "config.json").read_text())
        return int(cfg.get("text_config", cfg).get("num_hidden_layers", 0))

    base_layers = layers(base)
    errors: dict[str, TensorError] = {}
    if layers(artifact) == base_layers:
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        errors = tensor_errors(model, StepContext(originals=safetensors_lookup(base.path, tied),
                                                  device=device))
    ref = reference_params or n_params
    return Variant(config, model, VariantStats(
        params=n_params, bytes=on_disk, bits_per_weight=8 * on_disk / ref,
        load_seconds=load_seconds, tensor_errors=errors,
        details={"artifact": {"kind": kind, "path": config.artifact.path.name,
                              "on_disk": on_disk, "layers": layers(artifact),
                              "baseline_layers": base_layers, "params": n_params,
                              "baseline_params": ref}}))


def check_vocabulary(artifact: ModelSource, given: Artifact, base_vocab: dict[str, int]) -> None:
    """A candidate's tokenizer must be the baseline's, or the comparison would feed it other
    token ids."""
    from shrinktests.core.schema import ConfigError

    kind = given.kind
    vocab = load_tokenizer(artifact).get_vocab()
    if vocab != base_vocab:
        differ = sorted(set(vocab.items()) ^ set(base_vocab.items()), key=lambda kv: kv[1])
        raise ConfigError(kind, f"{given.path}: its tokenizer is not the baseline's "
                                f"({len(vocab)} vs {len(base_vocab)} tokens; first difference "
                                f"{differ[0] if differ else '?'}): a candidate must read the "
                                "prompts as the baseline does")
