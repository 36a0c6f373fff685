"""pytest-xdist: whole configs per worker, and the workers' summaries merged on the controller.

Imported by the plugin module, whose namespace pytest reads the hooks from. The controller
sees node ids only (it collects nothing), so the scheduler reads the config from the
parameter id.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from shrinktests.pytest_plugin.stash import relay_key, session_key, worker_data_key

#: the name under which a worker finds the file to write its status into
PROGRESS_INPUT = "shrinktests_progress"


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, Any, Any]:
    """With ``-n N`` and no ``--dist``, distribute whole configs (``loadgroup``): a worker then
    loads each model it owns once, instead of every worker loading every config.

    A wrapper, because xdist's own ``tryfirst`` implementation turns ``dist == "no"`` into
    ``"load"``, and which of two ``tryfirst`` plugins runs first depends on the order their
    entry points load; a wrapper's first half runs before both.
    """
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadgroup"
    return (yield)


def config_group(nodeid: str, configs: list[str], case_ids: set[str],
                 reference: str) -> str | None:
    """The config whose worker should run test ``nodeid``, read from its parameter id
    (``test_drift[bf16-tiny.hello]`` → ``bf16``); a test with a case but no config (the
    baseline snapshots) rides with the reference, and so do the atlas tests (they perturb
    the reference model); None for tests that are not ours."""
    name = nodeid.rsplit("::", 1)[-1]
    if name.startswith("test_atlas"):
        return reference
    if "[" not in name or "]" not in name:
        return None
    param = name[name.index("[") + 1:name.rindex("]")]
    for config in sorted(configs, key=len, reverse=True):  # "fp4-dq" before "fp4"
        if param == config or param.startswith(config + "-"):
            return config
    if any(param == c or param.startswith(c + "-") for c in case_ids):
        return reference
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup``, keep every test of one config on one worker.

    Not through ``xdist_group`` marks: xdist 3.8 implements them by rewriting ``item._nodeid``
    to ``<nodeid>@<group>``, which pytest 9.2 (structured node ids) ignores, so the marks
    silently stopped grouping (pytest-xdist issue #1386). A scheduler that reads the config
    from the node id does not depend on either project's internals beyond ``_split_scope``.
    """
    session = config.stash.get(session_key, None)
    if session is None or config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    configs = session.configs.names()
    case_ids = {c.id for c in session.cases()}
    reference = session.configs.reference

    class ConfigScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            group = config_group(nodeid, configs, case_ids, reference)
            return f"shrinktests:{group}" if group else str(super()._split_scope(nodeid))

    return ConfigScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """On the xdist controller: give each worker a file for its status, shown by the relay."""
    config = node.config
    if config.stash.get(session_key, None) is None:
        return
    relay = config.stash.get(relay_key, None)
    if relay is None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            return
        from shrinktests.pytest_plugin.progress_line import TerminalProgress, WorkerRelay

        terminal = TerminalProgress(reporter, capture)
        config.pluginmanager.register(terminal)  # it erases the status before each outcome
        relay = config.stash[relay_key] = WorkerRelay(terminal)
    node.workerinput[PROGRESS_INPUT] = str(relay.path(node.gateway.id))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand this worker's summary data to the controller. On the
    controller: stop showing the workers' statuses."""
    relay = session.config.stash.get(relay_key, None)
    if relay is not None:
        relay.close()
    workeroutput = getattr(session.config, "workeroutput", None)
    shrink = session.config.stash.get(session_key, None)
    if workeroutput is None or shrink is None or not shrink.runs:
        return
    from shrinktests.report.build import summary_data

    workeroutput["shrinktests"] = json.dumps(summary_data(shrink))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: collect each worker's summary data as it finishes."""
    data = getattr(node, "workeroutput", {}).get("shrinktests")
    if data:
        node.config.stash.setdefault(worker_data_key, []).append(json.loads(data))
