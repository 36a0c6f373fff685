"""A syrupy extension for baseline outputs: one readable ``.txt`` file per prompt under
``snapshots/``, so a changed baseline shows up in a pull request as a diff of words.

Each file starts with a header (format, model fingerprint, reference config, decoding
settings). If the headers differ, comparing the texts would be a wall of irrelevant diff, so
the failure says what changed in the header and how to regenerate instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from shrinktests.run.cache import atomic_write_text

if TYPE_CHECKING:
    from syrupy.data import SnapshotCollection
    from syrupy.location import PyTestLocation

    from shrinktests.core.generation import Generation
    from shrinktests.spec.files import CompressionConfig

UPDATE_HINT = "pytest suites/ --snapshot-update"
FORMAT = 1


def render(gen: Generation, prompt: str, model: str, reference: CompressionConfig,
           decoding: str) -> str:
    """The readable snapshot of one baseline output: a header naming what produced it (a
    mismatch there asks for regeneration), then the prompt, the text and the token ids,
    sixteen to a line so a diff shows where the ids change."""
    steps = "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in reference.params())
    ids = list(gen.token_ids)
    id_lines = [" ".join(map(str, ids[i:i + 16])) for i in range(0, len(ids), 16)]
    end = "end of sequence" if gen.finished else "token budget reached"
    return "\n".join([
        f"# shrinktests baseline snapshot, format {FORMAT}",
        f"# model: {model}",
        f"# reference config: {reference.name} ({steps})",
        f"# decoding: {decoding}",
        "",
        "## prompt",
        prompt,
        "",
        f"## output ({len(ids)} tokens, {end})",
        gen.text,
        "",
        "## token ids",
        *id_lines,
        "",
    ])


def _header(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("# ")][:8]


class BaselineSnapshotExtension(SingleFileSnapshotExtension):
    file_extension = "txt"
    _write_mode = WriteMode.TEXT
    snapshot_root: Path = Path("snapshots")

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        return str(cls.snapshot_root / test_location.basename)

    @classmethod
    def write_snapshot_collection(
        cls, *, snapshot_collection: SnapshotCollection, name_order: dict[str, int] | None = None
    ) -> None:
        """syrupy's single-file writer opens the snapshot with ``"w"`` (truncating it first):
        an interrupted ``--snapshot-update`` would leave a half-written baseline. Write it
        atomically instead."""
        data = next(iter(snapshot_collection)).data
        if not isinstance(data, str):
            raise TypeError(f"a baseline snapshot is text, got {type(data).__name__}")
        atomic_write_text(Path(snapshot_collection.location), data)

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        old, new = _header(str(snapshot_data or "")), _header(str(serialized_data))
        if snapshot_data is not None and old != new:
            yield "The snapshot was recorded under different settings; its text is not comparable."
            for a, b in zip(old, new, strict=False):
                if a != b:
                    yield f"  recorded: {a[2:]}"
                    yield f"  now:      {b[2:]}"
            yield f"Review and regenerate the baselines with: {UPDATE_HINT}"
            return
        yield from super().diff_lines(serialized_data, snapshot_data)
        yield f"If the new baseline is intended, accept it with: {UPDATE_HINT}"


def recorded_token_ids(text: str) -> list[int] | None:
    """The token ids of a baseline snapshot (the lines after ``## token ids``), if parseable."""
    lines = text.splitlines()
    try:
        start = lines.index("## token ids") + 1
    except ValueError:
        return None
    try:
        return [int(tok) for line in lines[start:] for tok in line.split()]
    except ValueError:
        return None


def same_header(a: str, b: str) -> bool:
    return _header(a) == _header(b)


def extension_for(root: Path) -> type[BaselineSnapshotExtension]:
    """A subclass bound to this run's snapshot folder (syrupy extensions are classes)."""
    return type("BaselineSnapshot", (BaselineSnapshotExtension,), {"snapshot_root": root})
