"""What the plugin writes on pytest's terminal: the header, the notice before the embedded
model's conversion, the status line of a long test, and the closing summary with its report
files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shrinktests.pytest_plugin.distribute import PROGRESS_INPUT
from shrinktests.pytest_plugin.stash import session_key, worker_data_key

if TYPE_CHECKING:
    from shrinktests.session.session import ShrinkSession

#: the embedded model's conversion has been announced (or needs no announcement)
announced_key = pytest.StashKey[bool]()
PROGRESS_PLUGIN = "shrinktests-progress"


def header_lines(config: pytest.Config) -> list[str] | None:
    """The run's configs, suites, model, cache, numerics and accepted records, under pytest's
    own header."""
    session = config.stash.get(session_key, None)
    if session is None:
        return None
    from shrinktests.accepted.record import FOLDER, LEGACY_FILE
    from shrinktests.run.numerics import describe

    o, accepted = session.options, session.accepted.records
    lines = [
        f"shrinktests: configs {o.configs.path.name} ({', '.join(o.configs.names())}), "
        f"reference {o.configs.reference}",
        f"shrinktests: suites {', '.join(s.name for s in o.suites)}; model "
        f"{o.model or 'embedded SmolLM2-135M-Instruct'}; cache {o.cache_dir or 'off'}",
        f"shrinktests: numerics {describe(o.threads, o.device)}; accepted outputs of "
        f"{len(accepted)} configs in {o.snapshot_dir / FOLDER}",
    ]
    if other := sorted(set(accepted) - set(o.configs.names())):
        lines.append(f"shrinktests: {FOLDER}/ also holds {', '.join(other)}, not in "
                     f"{o.configs.path.name} (ignored)")
    if (o.snapshot_dir / LEGACY_FILE).exists():
        lines.append(f"shrinktests: {o.snapshot_dir / LEGACY_FILE} is the old record of known "
                     "failures (no fingerprints, no outputs): not applied; record the accepted "
                     "state with --shrink-accept-failures, then delete it")
    return lines


def announce_conversion(config: pytest.Config, session: ShrinkSession) -> None:
    """Say so before the embedded model's first conversion, which happens while tests are
    collected when the atlas is configured, else when the first test starts."""
    if session.options.model is not None or config.stash.get(announced_key, False):
        return
    from shrinktests.run.model import default_model_converted

    config.stash[announced_key] = True
    plugins = config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter and capture and not default_model_converted(session.options.cache_dir):
        with capture.global_and_fixture_disabled():  # the output is captured otherwise
            reporter.write_line("shrinktests: converting the embedded SmolLM2 GGUF to a "
                                "cached safetensors copy (once, about 20 s)")


def show_progress(config: pytest.Config, session: ShrinkSession) -> None:
    """A status line of what a long test is doing (an xdist worker's output never reaches
    the terminal: it writes its status into a file the controller shows)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and PROGRESS_INPUT in workerinput:
        from shrinktests.pytest_plugin.progress_line import FileProgress

        session.attach_progress(FileProgress(Path(workerinput[PROGRESS_INPUT])))
    if workerinput is not None or config.pluginmanager.has_plugin(PROGRESS_PLUGIN):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        from shrinktests.pytest_plugin.progress_line import TerminalProgress

        progress = TerminalProgress(reporter, capture)
        config.pluginmanager.register(progress, PROGRESS_PLUGIN)  # it erases itself per test
        session.attach_progress(progress)


def write_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The closing table (merged from the xdist workers' data when there are workers), the
    time breakdown, the report files and the accept-mode summary."""
    session = config.stash.get(session_key, None)
    if session is None:
        return
    from shrinktests.report.build import merge_data, summary_data
    from shrinktests.report.terminal import render

    parts = config.stash.get(worker_data_key, [])
    if parts:
        data = merge_data(parts, session.configs.names())
    elif session.runs or session.atlas_results():
        data = summary_data(session)
    else:
        return
    terminalreporter.section("shrinktests summary")
    for line in render(data):
        terminalreporter.write_line(line)
    from shrinktests.run.progress import describe_breakdown, describe_slowest

    if breakdown := describe_breakdown(data.get("phases", {}), session.elapsed()):
        terminalreporter.write_line(breakdown)
    if slowest := describe_slowest(data.get("config_phases", {})):
        terminalreporter.write_line(slowest)
    if folder := config.getoption("shrink_report"):
        from shrinktests.report.files import write_report

        written = write_report(Path(folder), data)
        terminalreporter.write_line(
            f"shrinktests: report written: {', '.join(str(p) for p in written)}")
    from shrinktests.pytest_plugin.recording import PLUGIN_NAME, AcceptRecorder

    recorder = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(recorder, AcceptRecorder):
        terminalreporter.write_line(recorder.summary())
