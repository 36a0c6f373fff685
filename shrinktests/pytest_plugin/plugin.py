"""The pytest plugin (registered through the ``pytest11`` entry point): hooks and fixtures.

Hooks stay thin. Options are parsed by small ``type=`` functions and resolved, as the CLI's
are, by :mod:`shrinktests.spec.options`; suites and configs are validated once at configure time (a
bad file is a usage error, exit code 4). Beside this module: test kinds (``kinds``),
expectations (known failures, accepted regressions, ``expect = "breaks"``: ``expectations``),
the xdist hand-off (``distribute``) and the accept-mode recorder (``recording``); everything
else is the :class:`~shrinktests.run.session.ShrinkSession` kept in ``config.stash``.
Importing this module is cheap: torch and transformers load only when a model is needed.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shrinktests.pytest_plugin import expectations
from shrinktests.pytest_plugin.distribute import (  # noqa: F401  # hooks pytest reads from this module
    PROGRESS_INPUT,
    pytest_cmdline_main,
    pytest_configure_node,
    pytest_sessionfinish,
    pytest_testnodedown,
    pytest_xdist_make_scheduler,
)
from shrinktests.pytest_plugin.kinds import AGGREGATE, kind_of
from shrinktests.pytest_plugin.stash import error_key, session_key, worker_data_key
from shrinktests.spec.flags import SHARED

if TYPE_CHECKING:
    from shrinktests.run.session import ShrinkSession

#: on a behaviour test item: the config whose accepted failures decide whether it is a strict
#: xfail (decided at setup, once the model's and config's fingerprints are known)
accepted_item_key = pytest.StashKey[str]()
#: whether the item judges one prompt (drift, degeneration, constraint), not an aggregate
per_prompt_item_key = pytest.StashKey[bool]()
#: some collected test wants shrinktests' fixtures, but the plugin found no configs file
unconfigured_key = pytest.StashKey[bool]()
#: the embedded model's conversion has been announced (or needs no announcement)
announced_key = pytest.StashKey[bool]()
#: pytest-benchmark options that mean "I want benchmark numbers": they switch
#: test_throughput on, as --shrink-bench does
_BENCH_OPTIONS = ("benchmark_only", "benchmark_save", "benchmark_autosave",
                  "benchmark_compare", "benchmark_json")
PROGRESS_PLUGIN = "shrinktests-progress"
_FIXTURES = ("shrink_config", "shrink_case", "shrink_check", "shrink_scope")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shrinktests", "behavioural regression tests for compressed LLMs")
    for flag in SHARED:
        group.addoption(f"--shrink-{flag.name}", default=None, **flag.kwargs())
    group.addoption("--shrink-numerics", choices=("native", "portable"), default="native",
                    help="native: the machine's own kernels, as users run them (default); "
                         "portable: every x86-64 CPU with AVX2 runs the same kernels, at one "
                         "thread (torch's AVX2 code, MKL_CBWR=AVX2,STRICT, oneDNN capped at "
                         "AVX2), for release gates that must reproduce bit for bit; slower")
    group.addoption("--shrink-snapshots", metavar="DIR", default=None,
                    help="baseline snapshot folder (default: snapshots/ in the rootdir)")
    group.addoption("--shrink-bench", action="store_true", default=False,
                    help="run the throughput benchmarks (test_throughput) too; also on with "
                         "--benchmark-only/-save/-autosave/-compare/-json")
    group.addoption("--shrink-reference", choices=("auto", "stored", "live"), default="auto",
                    help="baseline distributions: 'stored' (the top-k file beside the "
                         "snapshots; the baseline model is never loaded), 'live' (run it), "
                         "'auto' (stored when the file matches this run; default)")
    group.addoption("--shrink-report", metavar="DIR", default=None,
                    help="write summary.md (for a pull request), index.html (plots) and "
                         "data.json into DIR")
    group.addoption("--shrink-accept-failures", action="store_true", default=False,
                    help="record the accepted state of each config that ran: its greedy "
                         "outputs and the behaviour tests it fails now (strict xfails later), "
                         "in <snapshots>/accepted/<config>.toml (reviewed like snapshots)")
    parser.addini("shrink_model", "default for --shrink-model", default="")
    parser.addini("shrink_configs", "default for --shrink-configs", default="")
    parser.addini("shrink_suites", "default suite files", type="linelist", default=[])
    parser.addini("shrink_snapshots", "default for --shrink-snapshots", default="")
    parser.addini("shrink_device", "default for --shrink-device (default: auto)", default="auto")


def _path(config: pytest.Config, option: str, ini: str) -> Path | None:
    """An option's path relative to the working directory, an ini key's to the rootdir."""
    value = config.getoption(option) or config.getini(ini)
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else (Path.cwd() / p if config.getoption(option)
                                      else config.rootpath / p)


def _request(config: pytest.Config) -> Any:
    from shrinktests.spec.options import RunRequest

    suites = config.getoption("--shrink-suite")
    ini_suites = config.getini("shrink_suites")
    return RunRequest(
        root=config.rootpath,
        configs=_path(config, "--shrink-configs", "shrink_configs"),
        suites=tuple(Path(p).resolve() for p in suites) if suites else
        tuple(config.rootpath / p for p in ini_suites),
        model=_path(config, "--shrink-model", "shrink_model"),
        cache=config.getoption("--shrink-cache"),
        threads=config.getoption("--shrink-threads"),
        snapshots=_path(config, "--shrink-snapshots", "shrink_snapshots"),
        reference=config.getoption("shrink_reference"),
        record=bool(getattr(config.option, "update_snapshots", False)),
        accept=bool(config.getoption("shrink_accept_failures")),
        device=config.getoption("--shrink-device") or config.getini("shrink_device") or "auto",
        workers=_workers(config),
    )


def _workers(config: pytest.Config) -> int:
    """How many processes run this session's tests at once: xdist's worker count (on the
    controller and on each worker alike, so both report the same thread count), else 1."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)  # xdist has made "auto" a number
    return n if isinstance(n, int) and n > 0 else 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shrinktests: a behavioural test generated from a suite and a config")
    config.stash[session_key] = None
    # known noise from torch/bitsandbytes internals, not from the code under test
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    from shrinktests.spec.files import SpecError
    from shrinktests.spec.options import NotConfigured, OptionError, resolve

    if config.getoption("shrink_numerics") == "portable":
        _enter_portable(config)
    request = _request(config)
    if request.accept and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "shrinktests: --shrink-accept-failures records each config's outputs, which stay on "
            "the xdist worker that generated them: record in a single process (without -n)")
    try:
        options = resolve(request)
    except NotConfigured as exc:
        config.stash[error_key] = f"{exc.problem}: pass --shrink-configs PATH"
        return
    except OptionError as exc:
        raise pytest.UsageError(f"shrinktests: --shrink-{exc.setting} {exc.problem}") from None
    except SpecError as exc:
        raise pytest.UsageError(f"shrinktests: {exc}") from None
    from shrinktests.run.session import ShrinkSession

    session = config.stash[session_key] = ShrinkSession(options)
    if options.accept and not hasattr(config, "workerinput"):
        from shrinktests.accepted.record import FOLDER
        from shrinktests.pytest_plugin.recording import PLUGIN_NAME, AcceptRecorder

        recorder = AcceptRecorder(session, options.snapshot_dir / FOLDER)
        config.pluginmanager.register(recorder, PLUGIN_NAME)


def _enter_portable(config: pytest.Config) -> None:
    """``--shrink-numerics portable``: pinned kernels, one thread (a reduction split over
    threads adds in another order)."""
    from shrinktests.run.numerics import enter_portable

    threads = config.getoption("shrink_threads")
    if threads not in (None, 1):
        raise pytest.UsageError(f"shrinktests: --shrink-numerics portable runs at one thread, "
                                f"not --shrink-threads {threads}")
    try:
        enter_portable()
    except RuntimeError as exc:
        raise pytest.UsageError(f"shrinktests: --shrink-numerics portable: {exc}") from None
    config.option.shrink_threads = 1


def get_session(config: pytest.Config) -> ShrinkSession:
    session = config.stash.get(session_key, None)
    if session is None:
        raise pytest.UsageError(
            "shrinktests: " + config.stash.get(error_key, "the plugin is not configured"))
    return session


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = config.stash.get(session_key, None)
    if session is None:
        return None
    from shrinktests.accepted.record import FOLDER, LEGACY_FILE
    from shrinktests.run.numerics import describe

    o = session.options
    lines = [
        f"shrinktests: configs {o.configs.path.name} ({', '.join(o.configs.names())}), "
        f"reference {o.configs.reference}",
        f"shrinktests: suites {', '.join(s.name for s in o.suites)}; model "
        f"{o.model or 'embedded SmolLM2-135M-Instruct'}; cache {o.cache_dir or 'off'}",
        f"shrinktests: numerics {describe(o.threads, o.device)}; accepted outputs of "
        f"{len(o.accepted)} configs in {o.snapshot_dir / FOLDER}",
    ]
    if other := sorted(set(o.accepted) - set(o.configs.names())):
        lines.append(f"shrinktests: {FOLDER}/ also holds {', '.join(other)}, not in "
                     f"{o.configs.path.name} (ignored)")
    if (o.snapshot_dir / LEGACY_FILE).exists():
        lines.append(f"shrinktests: {o.snapshot_dir / LEGACY_FILE} is the old record of known "
                     "failures (no fingerprints, no outputs): not applied; record the accepted "
                     "state with --shrink-accept-failures, then delete it")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    kind = kind_of(metafunc)
    names = metafunc.fixturenames
    if kind is None and not any(n in names for n in _FIXTURES):
        return
    if metafunc.config.stash.get(session_key, None) is None:
        # raised from pytest_collection_modifyitems instead: raised here, pytest would report
        # it as a collection error of this module (exit code 2), not a usage error (4)
        metafunc.config.stash[unconfigured_key] = True
        return
    session = get_session(metafunc.config)
    if "shrink_config" in names:
        configs = session.configs.names()
        if kind is not None and kind.skips_reference:
            configs = [c for c in configs if c != session.configs.reference]
        metafunc.parametrize("shrink_config", configs, indirect=True, scope="session")
    if "shrink_scope" in names:
        atlas = session.atlas
        if atlas is None:
            metafunc.parametrize("shrink_scope", [pytest.param(None, id="no-atlas", marks=[
                pytest.mark.skip(reason=f"no [settings.atlas] in {session.configs.path.name}")])])
        else:
            metafunc.parametrize("shrink_scope", atlas.scope_ids())
    if "shrink_check" in names:
        pairs = [(c, i) for c in session.cases() for i in range(len(c.prompt.checks))]
        ids = [f"{c.id}-{c.prompt.checks[i].name}" + (f"{i}" if i else "") for c, i in pairs]
        metafunc.parametrize("shrink_check", pairs, ids=ids)
    elif "shrink_case" in names:
        cases = session.cases()
        metafunc.parametrize("shrink_case", cases, ids=[c.id for c in cases])


def benchmarks_requested(config: pytest.Config) -> bool:
    if config.getoption("shrink_bench"):
        return True
    return any(config.getoption(o, default=None) for o in _BENCH_OPTIONS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = config.stash.get(session_key, None)
    if session is None:
        if config.stash.get(unconfigured_key, False):
            get_session(config)  # raises the usage error that says what is missing
        return
    bench_on = benchmarks_requested(config)
    atlas = session.configs.atlas
    for item in items:
        kind = kind_of(item)
        if kind is None:
            continue
        if kind.benchmark and not bench_on:
            item.add_marker(pytest.mark.skip(
                reason="throughput benchmarks are opt-in: --shrink-bench, or --benchmark-only "
                "/ --benchmark-autosave / --benchmark-compare"))
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("shrink_config") if callspec else None
        if name is not None:
            item.user_properties += [("shrink_config", name), ("shrink_behaviour", kind.behaviour)]
        decision = expectations.decide(
            kind, item.name, session.configs.get(name) if name is not None else None,
            atlas_known=atlas.known_failures if atlas else (), accept=session.options.accept)
        if decision.expectation is not None:
            item.add_marker(pytest.mark.xfail(strict=decision.expectation.strict,
                                              reason=decision.expectation.reason))
        if decision.check_accepted and name is not None:
            item.stash[accepted_item_key] = name
            item.stash[per_prompt_item_key] = kind is not AGGREGATE


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Accepted regressions are strict xfails. Decided here rather than at collection: only
    a record made for this model and this config applies, and the fingerprints need the model
    source (and, for calibrated methods, the tokenizer). pytest's skipping plugin reads xfail
    marks again when the call starts, so a mark added now counts."""
    name = item.stash.get(accepted_item_key, None)
    session = item.config.stash.get(session_key, None)
    if name is None or session is None:
        return
    from shrinktests.accepted.record import FOLDER, path_for

    where = str(path_for(Path(FOLDER), name))
    foreign = session.foreign_cpu(name)
    if foreign is not None:
        expected = expectations.on_another_cpu(item.name, name, session.accepted_failures(name),
                                               foreign, item.stash[per_prompt_item_key])
    else:
        expected = expectations.accepted(item.name, name, session.accepted_failures(name),
                                         where)
    if expected is not None:
        item.add_marker(pytest.mark.xfail(strict=expected.strict, reason=expected.reason))


@pytest.fixture(scope="session")
def shrink_session(request: pytest.FixtureRequest) -> ShrinkSession:
    """The run's :class:`ShrinkSession` (model source, configs, suites, results)."""
    session = get_session(request.config)
    _announce_conversion(request.config, session)
    _show_progress(request.config, session)
    return session


def pytest_collection(session: pytest.Session) -> None:
    shrink = session.config.stash.get(session_key, None)
    if shrink is not None:  # the atlas's test ids need the model's layer count
        _announce_conversion(session.config, shrink)


def _announce_conversion(config: pytest.Config, session: ShrinkSession) -> None:
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


def _show_progress(config: pytest.Config, session: ShrinkSession) -> None:
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


@pytest.fixture(scope="session")
def shrink_config(request: pytest.FixtureRequest,
                  shrink_session: ShrinkSession) -> Generator[str, None, None]:
    """One compression config (parametrized over the configs file); yields its name.

    Session-scoped, so pytest runs all tests of one config together and its model is
    released before the next config is built.
    """
    name: str = request.param
    yield name
    shrink_session.release(name)


@pytest.fixture
def shrink_case(request: pytest.FixtureRequest) -> Any:
    """One prompt of one suite (parametrized over every suite)."""
    return request.param


@pytest.fixture
def shrink_check(request: pytest.FixtureRequest) -> Any:
    """One (case, check index) pair: a constraint attached to a prompt."""
    return request.param


@pytest.fixture
def shrink_scope(request: pytest.FixtureRequest) -> str:
    """One atlas scope id, e.g. ``L03.mlp`` (parametrized over layers x ``[settings.atlas]``
    parts)."""
    scope: str = request.param
    return scope


@pytest.fixture
def shrink_snapshot(snapshot: Any, shrink_session: ShrinkSession) -> Any:
    """syrupy's ``snapshot`` bound to the readable baseline format under ``snapshots/``."""
    from shrinktests.pytest_plugin.snapshot import extension_for

    return snapshot.use_extension(extension_for(shrink_session.options.snapshot_dir))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    name = str(dict(item.user_properties).get("shrink_config", ""))
    session = item.config.stash.get(session_key, None)
    if name and session is not None and (report.when == "call" or report.outcome != "passed"):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):  # a non-strict xfail that passed is an xpass
            outcome = "xfailed" if report.skipped else "xpassed" if report.passed else outcome
        session.runs[name].outcomes[outcome] += 1
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is None:
        return
    from shrinktests.report.terminal import merge_data, render, summary_data

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
