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
