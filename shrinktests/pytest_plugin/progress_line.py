"""The progress of a running test on pytest's terminal, without breaking pytest's output.

On a terminal the status is written after pytest's own progress characters and erased again
(backspaces, never a carriage return, so the line of dots survives), cut to the terminal's
width. When the output is not a terminal (CI logs) it is written as plain lines, at most one
every few seconds per config and step, so a log shows which config was being built and how
far its generation got.

Under pytest-xdist the workers have no terminal (what they write never reaches it), so each
worker writes its status into a file (:class:`FileProgress`) and the controller shows the
workers' statuses side by side (:class:`WorkerRelay`, a thread polling those files).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shrinktests.run.progress import Progress

#: plain-line mode: the shortest gap between two lines about the same thing
_PLAIN_EVERY = 10.0


class TerminalProgress(Progress):
    def __init__(self, reporter: Any, capture: Any) -> None:
        self.reporter = reporter
        self.capture = capture
        tw = reporter._tw
        self.live = bool(getattr(tw, "hasmarkup", False))
        self._shown = 0
        self._last_topic = ""
        self._last_plain = 0.0
        #: a relay thread and pytest's own hooks both write the status
        self.lock = threading.RLock()
        self.last_report = 0.0

    def _write(self, text: str) -> None:
        # straight to pytest's output file: the writer's own idea of the current line's
        # width then stays pytest's, which is what the status is cut to
        with self.capture.global_and_fixture_disabled():
            out = self.reporter._tw._file
            out.write(text)
            out.flush()

    def status(self, text: str) -> None:
        with self.lock:
            self._status(text)

    def _status(self, text: str) -> None:
        if self.live:
            tw = self.reporter._tw
            room = tw.fullwidth - tw.width_of_current_line - 2
            shown = f" [{text}]"[:max(room, 0)]
            self._write(self._erase() + shown)
            self._shown = len(shown)
            return
        topic = text.split(",")[0]
        now = time.monotonic()
        if topic != self._last_topic or now - self._last_plain >= _PLAIN_EVERY:
            self._last_topic, self._last_plain = topic, now
            self.reporter.ensure_newline()
            with self.capture.global_and_fixture_disabled():
                self.reporter.write_line(f"[shrinktests] {text}")

    def _erase(self) -> str:
        n, self._shown = self._shown, 0
        return "\b" * n + " " * n + "\b" * n if n else ""

    def clear(self) -> None:
        with self.lock:
            if self.live and self._shown:
                self._write(self._erase())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Erase the status before pytest writes the test's outcome."""
        with self.lock:
            self.clear()
            self.last_report = time.monotonic()


class FileProgress(Progress):
    """An xdist worker's status, written into ``path`` for the controller's relay (replaced
    whole, at most twice a second: a worker reports every generation step)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written = 0.0

    def status(self, text: str) -> None:
        now = time.monotonic()
        if now - self._written >= 0.5:
            self._written = now
            self._put(text)

    def clear(self) -> None:
        self._written = 0.0
        self._put("")

    def _put(self, text: str) -> None:
        from shrinktests.run.cache import atomic_write_text

        with contextlib.suppress(OSError):  # the controller ended the run, folder and all
            atomic_write_text(self.path, text)


class WorkerRelay:
    """On the xdist controller: a folder the workers write their statuses into, and a thread
    that shows them, about once a second, on the controller's terminal."""

    def __init__(self, terminal: TerminalProgress, every: float = 1.0) -> None:
        self.terminal = terminal
        self.folder = Path(tempfile.mkdtemp(prefix="shrinktests-progress-"))
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shrinktests-progress",
                                        daemon=True)
        #: plain-line mode: one throttle per worker (each names its own config)
        self._plain: dict[str, TerminalProgress] = {}

    def path(self, worker: str) -> Path:
        if not self._thread.is_alive():
            self._thread.start()
        return self.folder / worker

    def statuses(self) -> dict[str, str]:
        """Each worker's current status (empty ones left out), by worker id."""
        out = {}
        for file in sorted(self.folder.glob("gw*")):  # not the writers' hidden temporary files
            try:
                text = file.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if text:
                out[file.name] = text
        return out

    def show(self) -> None:
        statuses = self.statuses()
        t = self.terminal
        with t.lock:
            if time.monotonic() - t.last_report < 0.5:
                return  # pytest is writing an outcome: the next poll shows it
            if t.live:
                if statuses:
                    t.status(" · ".join(statuses.values()))
                else:
                    t.clear()
                return
            for worker, text in statuses.items():
                plain = self._plain.setdefault(worker, TerminalProgress(t.reporter, t.capture))
                plain.status(text)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.show()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.terminal.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
