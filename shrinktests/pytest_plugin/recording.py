"""``--shrink-accept-failures``: record each config's accepted state at the end of the run.

A plugin object registered in accept mode (one process: the outputs live where they were
generated). It notes which behaviour tests ran and which failed, with the first line of the
failure, and at the end writes ``snapshots/accepted/<config>.toml`` for every config that ran
(see :mod:`shrinktests.accepted.record`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shrinktests.pytest_plugin.expectations import RECORDING

if TYPE_CHECKING:
    from shrinktests.session.session import ShrinkSession

PLUGIN_NAME = "shrinktests-accept"


class AcceptRecorder:
    def __init__(self, session: ShrinkSession, folder: Path) -> None:
        self.session, self.folder = session, folder
        self.ran: dict[str, set[str]] = {}
        self.failing: dict[str, dict[str, str]] = {}
        self.written: list[Path] = []
        self.failures = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from shrinktests.accepted.record import first_line

        props = dict(report.user_properties)
        name = str(props.get("shrink_config", ""))
        if not name or not props.get("shrink_behaviour") or report.when != "call":
            return
        test = report.nodeid.rsplit("::", 1)[-1]
        self.ran.setdefault(name, set()).add(test)
        if report.skipped and str(getattr(report, "wasxfail", "")).startswith(RECORDING):
            self.failing.setdefault(name, {})[test] = first_line(report.longreprtext)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from shrinktests.accepted.record import MARGIN_FLOOR, merged, save

        s = self.session
        below = max(MARGIN_FLOOR, s.configs.replay_epsilon)
        for name in sorted(self.ran):
            if name == s.reference.name:  # the baseline's accepted state is its snapshots
                continue
            if not any(n == name for n, _ in s.generated()):
                continue  # skipped or crashed before generating: keep what was recorded
            record = merged(s.accepted.records.get(name), s.new_record(name, below),
                            self.ran[name], self.failing.get(name, {}))
            self.written.append(save(self.folder, record))
            self.failures += len(record.failures)

    def summary(self) -> str:
        if not self.written:
            return "shrinktests: no behaviour test of a compressed config ran; nothing recorded"
        return (f"shrinktests: recorded the accepted outputs and {self.failures} known failures "
                f"of {len(self.written)} configs in {self.folder}; review the diff")
