"""Model sources: a user's folder is validated before anything loads, and fingerprinted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrinktests.run.model import ModelSourceError, local_model_source


def _folder(tmp_path: Path, config: dict[str, object]) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"weights-v1")
    return folder


def test_missing_folder_and_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no such folder"):
        local_model_source(tmp_path / "nope", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match=r"no config\.json"):
        local_model_source(tmp_path / "empty", tmp_path / "cache")


def test_not_a_causal_lm_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"architectures": ["BertModel"]})
    with pytest.raises(ModelSourceError, match="not causal language models"):
        local_model_source(folder, tmp_path / "cache")


def test_fingerprint_follows_the_weights(tmp_path: Path) -> None:
    """Same files, same fingerprint; changed weights, another one (so caches miss)."""
    folder = _folder(tmp_path, {"architectures": ["LlamaForCausalLM"]})
    first = local_model_source(folder, tmp_path / "cache").fingerprint
    assert local_model_source(folder, tmp_path / "cache").fingerprint == first
    (folder / "model.safetensors").write_bytes(b"weights-v2")
    assert local_model_source(folder, tmp_path / "cache").fingerprint != first


def test_gguf_folder_holds_what_transformers_reads_from_the_gguf(model_cache: Path) -> None:
    """The embedded GGUF, converted by the fast path, loads to the weights, config and
    tokenizer that transformers' own ``from_pretrained(gguf_file=...)`` gives, bit for bit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shrinktests.run.model import default_gguf, default_model_source

    gguf = default_gguf()
    folder = default_model_source(model_cache).path
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    unequal = [k for k in mine if not torch.equal(mine[k], other[k])]
    assert not unequal, f"{len(unequal)} tensors differ, first {unequal[:3]}"
    assert ours.config.to_diff_dict().items() >= {
        k: v for k, v in theirs.config.to_diff_dict().items()
        if k not in ("quantization_config", "_name_or_path", "name_or_path")}.items()
    text = "Write a haiku about rain.\n<|im_start|>user\n  naïve café → 東京 1234"
    ids = AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)(text)["input_ids"]


def test_gguf_tensors_that_do_not_map_fall_back_to_transformers() -> None:
    """A model with a parameter that no tensor of the file fills gets no state dict from the
    fast path (``write_gguf_folder`` then loads through transformers instead)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from shrinktests.run.gguf_folder import gguf_state_dict
    from shrinktests.run.model import default_gguf

    gguf = default_gguf()
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.model.register_parameter("extra", torch.nn.Parameter(torch.empty(4, device="meta")))
    assert gguf_state_dict(gguf, model) is None
