"""Memory proportional to the model: weights copied out of the mapped files as they load, the
reference in the folder's own dtype, and what no method quantized kept in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinktests.core.heap import mapped_ranges
from shrinktests.run.engine import LOGIT_BYTES, logit_chunks
from shrinktests.run.model import ModelSource, folder_dtype, load_model
from shrinktests.run.variant import build_variant, unquantized_to
from shrinktests.spec.files import load_configs
from tests.test_prune import tiny_llama

CONFIGS = """[settings]
reference = "base"
[[config]]
name = "base"
method = "dtype"
dtype = "auto"
[[config]]
name = "bf16"
method = "dtype"
dtype = "bfloat16"
[[config]]
name = "q4"
method = "blockwise"
bits = 4
[[config]]
name = "q4-lowrank"
steps = [{ method = "blockwise", bits = 4 },
         { method = "eora", rank = 2, activation_aware = false }]
"""


def _folder(tmp_path: Path, dtype: torch.dtype) -> ModelSource:
    folder = tmp_path / f"tiny-{dtype}".replace("torch.", "")
    tiny_llama(2).to(dtype).save_pretrained(folder)
    return ModelSource(folder, "tiny", f"tiny-{dtype}")


def test_loaded_weights_are_the_files_and_none_points_into_their_mapping(
        tmp_path: Path) -> None:
    """The weights equal the file's, and none is a view of the mapped file any more: a view
    would keep the whole file resident beside every weight a method replaces."""
    source = _folder(tmp_path, torch.float32)
    model, _ = load_model(source)
    from safetensors.torch import load_file

    stored = load_file(str(source.path / "model.safetensors"))
    ranges = mapped_ranges(source.path.resolve())
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), stored[name]), name
        assert not any(lo <= p.data_ptr() < hi for lo, hi in ranges), name


def test_auto_is_the_folders_dtype_and_float32_auto_is_the_float32_config(
        tmp_path: Path) -> None:
    path = tmp_path / "configs.toml"
    path.write_text(CONFIGS)
    bf16 = _folder(tmp_path, torch.bfloat16)
    assert json.loads((bf16.path / "config.json").read_text())["dtype"] == "bfloat16"
    assert folder_dtype(bf16.path) == "bfloat16"
    assert folder_dtype(None) == "float32"  # the embedded model
    on_bf16 = load_configs(path, folder_dtype(bf16.path))
    assert on_bf16.reference_dtype() == "bfloat16"
    assert on_bf16.get("base").fingerprint() == on_bf16.get("bf16").fingerprint()
    on_fp32 = load_configs(path)
    explicit = load_configs(Path(path.write_text(CONFIGS.replace('"auto"', '"float32"'))
                                 and path))
    assert on_fp32.get("base").fingerprint() == explicit.get("base").fingerprint()


def test_a_bf16_reference_keeps_what_a_method_left_unquantized_in_bf16(
        tmp_path: Path) -> None:
    """A 4-bit config of a bf16 model carries a bf16 embedding and LM head (not float32 ones
    from the float32 load), so it reads smaller than the bf16 model, and its bits/w are
    those of the weights it quantized."""
    source = _folder(tmp_path, torch.bfloat16)
    path = tmp_path / "configs.toml"
    path.write_text(CONFIGS)
    configs = load_configs(path, "bfloat16")
    ref = build_variant(source, configs.get("base"))
    assert {p.dtype for p in ref.model.parameters()} == {torch.bfloat16}
    q4 = build_variant(source, configs.get("q4"), keep_dtype=configs.reference_dtype())
    assert q4.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert q4.model.lm_head.weight.dtype == torch.bfloat16
    # the rotary frequencies as in the reference's own cast: no drift charged to the method
    assert q4.model.model.rotary_emb.inv_freq.dtype == ref.model.model.rotary_emb.inv_freq.dtype
    assert q4.stats.bytes < ref.stats.bytes
    assert q4.stats.quantized_bits == pytest.approx(4.5, abs=0.6)  # codes plus block scales
    assert ref.stats.quantized_bits is None  # nothing changed
    # a low-rank correction's factors count with the weights they correct
    lowrank = build_variant(source, configs.get("q4-lowrank"), keep_dtype="bfloat16")
    assert q4.stats.quantized_bits is not None and lowrank.stats.quantized_bits is not None
    assert q4.stats.quantized_bits < lowrank.stats.quantized_bits < 16
    logits = q4.model(torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_unquantized_to_float32_changes_nothing() -> None:
    model = tiny_llama(1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unquantized_to(model, "float32")
    assert all(torch.equal(p, before[n]) and p.dtype == torch.float32
               for n, p in model.named_parameters())


@given(st.lists(st.integers(1, 4000), min_size=1, max_size=40), st.integers(1, 16),
       st.sampled_from([64, 49152, 151936]))
def test_logit_chunks_keep_the_order_and_the_byte_budget(kept: list[int], batch: int,
                                                         vocab: int) -> None:
    """Teacher-forced chunks: every row once, in order, at most ``batch`` rows, and a chunk of
    several rows never holds more logits than LOGIT_BYTES (a long row may go alone)."""
    order = list(range(len(kept)))
    chunks = list(logit_chunks(order, kept, batch, vocab))
    assert [i for c in chunks for i in c] == order
    for c in chunks:
        assert 1 <= len(c) <= batch
        if len(c) > 1:
            assert len(c) * max(kept[i] for i in c) * vocab * 4 <= LOGIT_BYTES


def test_the_embedded_models_chunks_are_the_fixed_eight_rows() -> None:
    """A 49k vocabulary and the longest shipped continuation (128 tokens) keep 8 rows a chunk:
    the same chunks, so the same rounding, as before the budget existed."""
    assert [len(c) for c in logit_chunks(range(41), [129] * 41, 8, 49152)] == [8] * 5 + [1]


def test_bits_of_a_4bit_weight_count_its_elements_not_its_packed_bytes() -> None:
    """bitsandbytes stores two 4-bit codes per uint8 element: NF4 reads about 4.5 bits per
    weight (codes plus one float32 scale per 64), not 9."""
    from shrinktests.compression.mixed import weight_bits

    bnb = pytest.importorskip("bitsandbytes")
    model = torch.nn.Sequential(torch.nn.Linear(128, 64, bias=False))
    layer = bnb.nn.Linear4bit(128, 64, bias=False, quant_type="nf4", compress_statistics=False)
    layer.load_state_dict(model[0].state_dict())
    layer = layer.to("cpu")  # quantizes
    model[0] = layer
    assert weight_bits(model, ["0"], {}) == pytest.approx(4.5)
