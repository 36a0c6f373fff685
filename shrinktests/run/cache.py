"""A content-addressed disk cache for generations and teacher-forced scores.

The key is a hash of everything that determines the value (model fingerprint, config
fingerprint, prompts, decoding settings, shrinktests version), so a changed input is a miss
and nothing needs invalidating by hand. Entries are written to a temporary file and renamed:
an interrupted run leaves either a whole entry or none, and the next run reuses what finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from shrinktests import __version__


@contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit, rename it over ``path``.

    Every file shrinktests writes goes through here: a crash, Ctrl-C or full disk mid-write
    leaves the previous ``path`` intact and no partial file, and concurrent writers (xdist
    workers, machines sharing a cache) each replace the whole file. Same folder, because
    ``os.replace`` is only atomic within one file system.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report or cache is not
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(text)


def cache_key(kind: str, parts: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "version": __version__, **parts}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """Pickle files under ``root/<kind>/<key[:2]>/<key>.pkl``; disabled when ``root`` is None."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.pkl"

    def get(self, kind: str, key: str) -> Any | None:
        if self.root is None:
            return None
        path = self._path(kind, key)
        try:
            with path.open("rb") as f:
                value = pickle.load(f)
        except FileNotFoundError:
            self.misses += 1
            return None
        except Exception:
            # a truncated or stale-format entry is a miss, never an error
            self.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        if self.root is None:
            return
        with atomic_writer(self._path(kind, key), binary=True) as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
