"""Write what a config produced as a Hugging Face checkpoint, so what ships is what was tested.

The folder is written with ``save_pretrained`` (weights, config, tokenizer) into a temporary
folder beside the target, loaded back, and compared with the model that was tested on the
first prompts of the suites: only a folder that reproduces the tested model's log-probs is
moved into place. A method whose result transformers cannot serialize (modules it does not
know, tensor subclasses) fails that check and says so, instead of shipping something else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shrinktests.run.engine import continuation_logprobs
from shrinktests.run.model import ModelSource, load_model, weight_files

if TYPE_CHECKING:
    from shrinktests.run.llama_cpp import LlamaCppModel
    from shrinktests.session.session import ShrinkSession

#: largest difference of a log-prob between the tested and the reloaded model
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The config's model cannot be written as a checkpoint that reproduces it."""


@dataclass(frozen=True)
class Exported:
    folder: Path
    on_disk: int  # bytes of the weight files
    tested_bytes: int  # the size the run measured for the config
    max_delta: float  # largest |Δ log-prob| of the reloaded model on the check prompts
    checked_tokens: int


def export_config(session: ShrinkSession, name: str, out: Path, prompts: int = 4) -> Exported:
    """Save config ``name``'s model to ``out`` (which must not exist yet) and check it."""
    if out.exists():
        raise ExportError(f"{out} exists; remove it or choose another --out")
    from shrinktests.run.llama_cpp import LlamaCppModel

    variant = session.variant(name)
    base = session.generations(session.reference.name, session.options.suites[0])[:prompts]
    ids, conts = [g.prompt_ids for g in base], [g.token_ids for g in base]
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(variant.model, LlamaCppModel):
        return _export_gguf(variant.model, out, ids, conts, variant.stats.bytes)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        try:
            variant.model.save_pretrained(tmp)  # type: ignore[operator]
            session.tokenizer.save_pretrained(tmp)
            reloaded, _ = load_model(ModelSource(tmp, out.name, "export-check"))
        except Exception as exc:
            raise ExportError(f"config {name!r} cannot be saved as a checkpoint: "
                              f"{type(exc).__name__}: {exc}") from exc
        pad = session.tokenizer.pad_token_id
        tested = continuation_logprobs(variant.model, pad, ids, conts)
        loaded = continuation_logprobs(reloaded, pad, ids, conts)
        delta = max((float(np.abs(a - b).max()) for a, b in zip(tested, loaded, strict=True)
                     if a.size), default=0.0)
        if not delta <= TOLERANCE:
            raise ExportError(
                f"config {name!r}: the saved checkpoint does not reproduce the tested model "
                f"(largest log-prob difference {delta:.3g} on {len(ids)} prompts): "
                f"transformers cannot serialize what {describe_steps(session, name)} made")
        on_disk = sum(f.stat().st_size for f in weight_files(tmp))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, on_disk, variant.stats.bytes, delta,
                    sum(len(c) for c in conts))


def describe_steps(session: ShrinkSession, name: str) -> str:
    config = session.configs.get(name)
    return " + ".join(step.name for step in config.steps) or name


def _export_gguf(model: LlamaCppModel, out: Path, ids: list[tuple[int, ...]],
                 conts: list[tuple[int, ...]], tested_bytes: int) -> Exported:
    """A llama.cpp config ships its GGUF file: copied beside ``out``, loaded back by llama.cpp
    and moved into place only if it gives the tested log-probs."""
    from shrinktests.run.llama_cpp import LlamaCppModel

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(model.path, tmp)
        reloaded = LlamaCppModel(tmp, model.threads)
        tested = [lp for _, lp in model.logprobs(ids, conts)]
        loaded = [lp for _, lp in reloaded.logprobs(ids, conts)]
        del reloaded
        delta = max((float(np.abs(a - b).max()) for a, b in zip(tested, loaded, strict=True)
                     if a.size), default=0.0)
        if not delta <= TOLERANCE:
            raise ExportError(f"{out.name}: llama.cpp does not read back the tested model "
                              f"(largest log-prob difference {delta:.3g})")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(out, out.stat().st_size, tested_bytes, delta, sum(len(c) for c in conts))
