"""Keys of what the plugin keeps in ``config.stash`` (shared by its hook modules).

The types are named, not imported: the plugin loads in every pytest run of an environment
where shrinktests is installed, and the session's module pulls in numpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from shrinktests.pytest_plugin.progress_line import WorkerRelay
    from shrinktests.report.data import SummaryData
    from shrinktests.session.session import ShrinkSession

#: the run's session; None when the plugin found no configs file
session_key: pytest.StashKey[ShrinkSession | None] = pytest.StashKey()
#: why there is no session (worded for the user), raised once a test needs one
error_key = pytest.StashKey[str]()
#: summary data sent by xdist workers, gathered on the controller
worker_data_key: pytest.StashKey[list[SummaryData]] = pytest.StashKey()
#: on the xdist controller: the workers' statuses shown on its terminal
relay_key: pytest.StashKey[WorkerRelay] = pytest.StashKey()
