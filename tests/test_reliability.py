"""Reliability without a model: atomic writes, no remote code."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

import shrinktests
from shrinktests.cache import DiskCache, atomic_write_text, atomic_writer
from shrinktests.model import ModelSource, load_model, load_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# --------------------------------------------------------------------------- atomic writes


class Boom(Exception):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_interrupted_text_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A write that dies half way leaves the previous content and no temporary file."""
    path = tmp_path / "memo.txt"
    atomic_write_text(path, "old")
    with pytest.raises(Boom), atomic_writer(path) as f:
        f.write("new, half")
        f.flush()
        raise Boom
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


class _Unpicklable:
    """Pickles to a few bytes, then fails: an interrupt in the middle of ``pickle.dump``."""

    def __reduce__(self) -> Any:
        raise Boom


def test_interrupted_cache_put_keeps_the_old_entry(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("generation", "ab12", ["first"])
    with pytest.raises(Boom):
        cache.put("generation", "ab12", ["x" * 10_000, _Unpicklable()])
    assert cache.get("generation", "ab12") == ["first"]
    assert _leftovers(tmp_path / "generation" / "ab") == []


def test_snapshot_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """syrupy's own writer truncates the file first; ours goes through atomic_writer."""
    from syrupy.data import Snapshot, SnapshotCollection

    from shrinktests import snapshot

    path = tmp_path / "test_baseline_snapshot[tiny.hello].txt"
    collection = SnapshotCollection(location=str(path))
    collection.add(Snapshot(name="x", data="# header\nfirst\n"))
    snapshot.BaselineSnapshotExtension.write_snapshot_collection(snapshot_collection=collection)
    assert path.read_text() == "# header\nfirst\n"

    def fail(p: Path, text: str) -> None:
        with atomic_writer(p) as f:
            f.write(text[:3])
            raise Boom

    monkeypatch.setattr(snapshot, "atomic_write_text", fail)
    collection = SnapshotCollection(location=str(path))
    collection.add(Snapshot(name="x", data="# header\nsecond\n"))
    with pytest.raises(Boom):
        snapshot.BaselineSnapshotExtension.write_snapshot_collection(
            snapshot_collection=collection)
    assert path.read_text() == "# header\nfirst\n"
    assert _leftovers(tmp_path) == []


def test_no_direct_file_writes_in_the_package() -> None:
    """Every write goes through cache.atomic_writer: no open(..., "w"), write_text,
    write_bytes, json.dump, torch.save or save_file elsewhere in shrinktests/ (the GGUF
    conversion's save_pretrained writes into a temporary folder that is renamed whole)."""
    root = Path(shrinktests.__file__).parent
    pattern = re.compile(r"""open\([^)]*["'][wax]b?["']|\.write_text\(|\.write_bytes\(|"""
                         r"""json\.dump\(|torch\.save\(|save_file\(|save_pretrained\(""")
    allowed = {("model.py", "save_pretrained("), ("resources.py", ".write_text("),
               ("cache.py", "open(fd, \"wb\" if binary else \"w\"")}
    found = []
    for path in sorted(root.rglob("*.py")):
        for m in pattern.finditer(path.read_text()):
            hit = m.group(0)
            if not any(path.name == name and hit.endswith(h) for name, h in allowed):
                found.append(f"{path.relative_to(root)}: {hit}")
    assert found == []


# --------------------------------------------------------------------------- remote code


def test_model_and_tokenizer_never_trust_remote_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a caller (or a method's load_kwargs) asking for it gets trust_remote_code=False."""
    import transformers

    seen: list[dict[str, Any]] = []

    class FakeModel:
        def eval(self) -> FakeModel:
            return self

    class FakeTokenizer:
        pad_token_id = 0
        padding_side = "right"

    def record(result: Any) -> Any:
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return result
        return from_pretrained

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        record(FakeModel()))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record(FakeTokenizer()))
    source = ModelSource(tmp_path, "fake", "0" * 16)
    load_model(source)
    load_model(source, trust_remote_code=True)
    load_tokenizer(source)
    assert [k["trust_remote_code"] for k in seen] == [False, False, False]


def test_every_from_pretrained_call_refuses_remote_code() -> None:
    """Static guard for new call sites: each ``from_pretrained(...)`` in the package passes
    ``trust_remote_code=False`` literally (load_model's ``**kwargs`` call forces it; the test
    above checks that one at run time)."""
    root = Path(shrinktests.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                continue
            flag = next((k.value for k in node.keywords if k.arg == "trust_remote_code"), None)
            literal_false = isinstance(flag, ast.Constant) and flag.value is False
            forced = any(k.arg is None for k in node.keywords) and path.name == "model.py"
            if not (literal_false or forced):
                bad.append(f"{path.name}:{node.lineno}")
    assert bad == []
