"""The pytest plugin (registered through the ``pytest11`` entry point).

Hooks stay thin: options are parsed by small ``type=`` functions, the suites and configs are
validated once at configure time (a bad file is a usage error, exit code 4), and everything
else is delegated to :class:`shrinktests.run.session.ShrinkSession` kept in ``config.stash``.
Importing this module is cheap: torch and transformers load only when a model is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shrinktests.spec import SpecError, load_configs, load_suite, suite_files_beside

if TYPE_CHECKING:
    from shrinktests.run.session import ShrinkSession

session_key = pytest.StashKey["ShrinkSession | None"]()
#: summary data sent by xdist workers, gathered on the controller
worker_data_key = pytest.StashKey[list[dict[str, Any]]]()
error_key = pytest.StashKey[str]()
#: some collected test wants shrinktests' fixtures, but the plugin found no configs file
unconfigured_key = pytest.StashKey[bool]()
#: on a behaviour test item: the config whose accepted failures decide whether it is a strict
#: xfail (decided at setup, once the model's and config's fingerprints are known)
accepted_item_key = pytest.StashKey[str]()

#: test kinds whose failures a config marked expect = "breaks" must show (strict xfail). Only
#: drift: a broken model may emit loops on one prompt and fluent-looking gibberish on the
#: next, so its degeneration and constraint tests are non-strict xfails.
STRICT_BREAK_TESTS = ("test_drift",)
#: the test kinds that judge behaviour (throughput of a broken config is still measured)
BEHAVIOUR_TESTS = ("test_drift", "test_degeneration", "test_constraint", "test_aggregate")
#: pytest-benchmark options that mean "I want benchmark numbers": they switch
#: test_throughput on, as --shrink-bench does
_BENCH_OPTIONS = ("benchmark_only", "benchmark_save", "benchmark_autosave",
                  "benchmark_compare", "benchmark_json")


def name_matches(name: str, pattern: str) -> bool:
    """Glob match of a test name where only ``*`` and ``?`` are wildcards (``[`` is literal,
    since every parametrized test name contains brackets)."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shrinktests", "behavioural regression tests for compressed LLMs")
    group.addoption("--shrink-model", metavar="PATH", default=None,
                    help="local Hugging Face causal LM folder (default: the embedded "
                         "SmolLM2-135M-Instruct)")
    group.addoption("--shrink-configs", metavar="PATH", default=None,
                    help="compression configs file (default: suites/configs.toml)")
    group.addoption("--shrink-suite", metavar="PATH", action="append", default=None,
                    help="prompt suite file; repeat for several (default: every other "
                         "*.toml beside the configs file, else beside suites/configs.toml)")
    group.addoption("--shrink-cache", metavar="DIR", default=None,
                    help="cache folder for converted models and results, or 'none' "
                         "(default: $SHRINKTESTS_CACHE or ~/.cache/shrinktests)")
    group.addoption("--shrink-threads", metavar="N", type=positive_int, default=None,
                    help="torch CPU threads, fixed for repeatable results (default: min(4, CPUs))")
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


def _path(config: pytest.Config, option: str, ini: str) -> Path | None:
    value = config.getoption(option) or config.getini(ini)
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else (Path.cwd() / p if config.getoption(option)
                                      else config.rootpath / p)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shrinktests: a behavioural test generated from a suite and a config")
    config.stash[session_key] = None
    # known noise from torch/bitsandbytes internals, not from the code under test
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    configs_path = _path(config, "--shrink-configs", "shrink_configs")
    explicit = configs_path is not None
    configs_path = configs_path or config.rootpath / "suites" / "configs.toml"
    if not explicit and not configs_path.exists():
        config.stash[error_key] = (
            f"no configs file at {configs_path}: pass --shrink-configs PATH")
        return
    try:
        configs = load_configs(configs_path)
        suites = tuple(load_suite(p) for p in _suite_paths(config, configs_path))
    except SpecError as exc:
        raise pytest.UsageError(f"shrinktests: {exc}") from None
    for i, suite in enumerate(suites):
        other = next((o for o in suites[:i] if o.name == suite.name), None)
        if other is not None:  # case ids (suite.prompt) and snapshot names would collide
            raise pytest.UsageError(
                f"shrinktests: {suite.path}, [suite], field 'name': {suite.name!r} is also the "
                f"name of {other.path}")
    from shrinktests.run.model import ModelSourceError, cache_root, check_model_folder
    from shrinktests.run.session import SessionOptions, ShrinkSession

    cache_opt = config.getoption("--shrink-cache")
    cache = None if cache_opt == "none" else Path(cache_opt) if cache_opt else cache_root()
    model = _path(config, "--shrink-model", "shrink_model")
    if model is not None:
        model = model.expanduser()
        try:
            check_model_folder(model)
        except ModelSourceError as exc:
            raise pytest.UsageError(f"shrinktests: {exc}") from None
    snapshots = _path(config, "--shrink-snapshots", "shrink_snapshots") or (
        config.rootpath / "snapshots")
    threads = config.getoption("--shrink-threads") or min(4, os.cpu_count() or 1)
    from shrinktests import accepted

    accept = bool(config.getoption("shrink_accept_failures"))
    if accept and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "shrinktests: --shrink-accept-failures records each config's outputs, which stay on "
            "the xdist worker that generated them: record in a single process (without -n)")
    try:
        records = accepted.load_folder(snapshots / accepted.FOLDER)
    except SpecError as exc:
        raise pytest.UsageError(f"shrinktests: {exc}") from None
    session = ShrinkSession(SessionOptions(
        model=model, configs=configs, suites=suites, cache_dir=cache, threads=threads,
        snapshot_dir=snapshots, reference=config.getoption("shrink_reference"),
        record=bool(getattr(config.option, "update_snapshots", False)),
        accepted=records, accept=accept,
    ))
    config.stash[session_key] = session
    if accept and not hasattr(config, "workerinput"):
        recorder = AcceptRecorder(session, snapshots / accepted.FOLDER)
        config.pluginmanager.register(recorder, "shrinktests-accept")


def _suite_paths(config: pytest.Config, configs_path: Path) -> list[Path]:
    given = config.getoption("--shrink-suite")
    if given:
        return [Path(p).resolve() for p in given]
    ini = config.getini("shrink_suites")
    if ini:
        return [config.rootpath / p for p in ini]
    try:
        return suite_files_beside(configs_path, config.rootpath / "suites" / "configs.toml")
    except SpecError as exc:
        raise pytest.UsageError(f"shrinktests: {exc}") from None


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
    from shrinktests.accepted import FOLDER, LEGACY_FILE
    from shrinktests.run.numerics import describe

    o = session.options
    lines = [
        f"shrinktests: configs {o.configs.path.name} ({', '.join(o.configs.names())}), "
        f"reference {o.configs.reference}",
        f"shrinktests: suites {', '.join(s.name for s in o.suites)}; model "
        f"{o.model or 'embedded SmolLM2-135M-Instruct'}; cache {o.cache_dir or 'off'}",
        f"shrinktests: numerics {describe(o.threads)}; accepted outputs of "
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
    names = metafunc.fixturenames
    if not any(n in names for n in ("shrink_config", "shrink_case", "shrink_check",
                                    "shrink_scope")):
        return
    if metafunc.config.stash.get(session_key, None) is None:
        # raised from pytest_collection_modifyitems instead: raised here, pytest would report
        # it as a collection error of this module (exit code 2), not a usage error (4)
        metafunc.config.stash[unconfigured_key] = True
        return
    session = get_session(metafunc.config)
    if "shrink_config" in names:
        configs = session.configs.names()
        if metafunc.function.__name__ in ("test_drift", "test_aggregate"):
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
    for item in items:
        if getattr(item, "originalname", None) == "test_throughput" and not bench_on:
            item.add_marker(pytest.mark.skip(
                reason="throughput benchmarks are opt-in: --shrink-bench, or --benchmark-only "
                "/ --benchmark-autosave / --benchmark-compare"))
        _mark_atlas(session, item)
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("shrink_config") if callspec else None
        if name is None:
            continue
        item.user_properties.append(("shrink_config", name))
        config_spec = session.configs.get(name)
        known = [g for g in config_spec.known_failures if name_matches(item.name, g)]
        kind = getattr(item, "originalname", item.name)
        if known:
            item.add_marker(pytest.mark.xfail(
                strict=True, reason=f"known failure of config {name!r} (listed as {known[0]!r} "
                "in known_failures)"))
        elif kind in BEHAVIOUR_TESTS and config_spec.expect != "breaks":
            if session.options.accept:  # record what fails without failing
                from shrinktests.accepted import RECORDING

                item.add_marker(pytest.mark.xfail(strict=False, reason=RECORDING))
            else:
                item.stash[accepted_item_key] = name
        if not known and config_spec.expect == "breaks" and kind in BEHAVIOUR_TESTS:
            strict = kind in STRICT_BREAK_TESTS
            item.add_marker(pytest.mark.xfail(
                strict=strict, reason=f"config {name!r} is marked expect = \"breaks\""))


def _mark_atlas(session: ShrinkSession, item: pytest.Item) -> None:
    """Strict xfails for the atlas scopes listed in ``[settings.atlas] known_failures``."""
    atlas = session.configs.atlas
    if atlas is None or not getattr(item, "originalname", "").startswith("test_atlas"):
        return
    known = [g for g in atlas.known_failures if name_matches(item.name, g)]
    if known:
        item.add_marker(pytest.mark.xfail(strict=True, reason=f"known sensitive scope (listed "
                                          f"as {known[0]!r} in [settings.atlas] known_failures)"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Accepted regressions are strict xfails. Decided here rather than at collection: only
    a record made for this model and this config applies, and the fingerprints need the model
    source (and, for calibrated methods, the tokenizer). pytest's skipping plugin reads xfail
    marks again when the call starts, so a mark added now counts."""
    name = item.stash.get(accepted_item_key, None)
    session = item.config.stash.get(session_key, None)
    if name is None or session is None:
        return
    if item.name in session.accepted_failures(name):
        from shrinktests.accepted import FOLDER

        item.add_marker(pytest.mark.xfail(
            strict=True, reason=f"accepted regression of config {name!r} (in {FOLDER}/"
            f"{name}.toml; refresh with --shrink-accept-failures)"))


class AcceptRecorder:
    """In accept mode (a single process): notes which behaviour tests ran and which failed
    (with the first line of the failure), and at the end writes the accepted record of every
    config that ran: those failures and the config's outputs."""

    def __init__(self, session: ShrinkSession, folder: Path) -> None:
        self.session, self.folder = session, folder
        self.ran: dict[str, set[str]] = {}
        self.failing: dict[str, dict[str, str]] = {}
        self.written: list[Path] = []
        self.failures = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from shrinktests.accepted import RECORDING, first_line

        name = str(dict(report.user_properties).get("shrink_config", ""))
        test = report.nodeid.rsplit("::", 1)[-1]
        if not name or test.split("[", 1)[0] not in BEHAVIOUR_TESTS or report.when != "call":
            return
        self.ran.setdefault(name, set()).add(test)
        if report.skipped and str(getattr(report, "wasxfail", "")).startswith(RECORDING):
            self.failing.setdefault(name, {})[test] = first_line(report.longreprtext)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from shrinktests.accepted import MARGIN_FLOOR, merged, save

        s = self.session
        below = max(MARGIN_FLOOR, s.configs.near_tie_epsilon)
        for name in sorted(self.ran):
            if name == s.reference.name:  # the baseline's accepted state is its snapshots
                continue
            if not any(n == name for n, _ in s.generated()):
                continue  # skipped or crashed before generating: keep what was recorded
            record = merged(s.options.accepted.get(name), s.new_record(name, below), self.ran[name],
                            self.failing.get(name, {}))
            self.written.append(save(self.folder, record))
            self.failures += len(record.failures)

    def summary(self) -> str:
        if not self.written:
            return "shrinktests: no behaviour test of a compressed config ran; nothing recorded"
        return (f"shrinktests: recorded the accepted outputs and {self.failures} known failures "
                f"of {len(self.written)} configs in {self.folder}; review the diff")


@pytest.fixture(scope="session")
def shrink_session(request: pytest.FixtureRequest) -> ShrinkSession:
    """The run's :class:`ShrinkSession` (model source, configs, suites, results)."""
    session = get_session(request.config)
    if session.options.model is None:
        from shrinktests.run.model import default_model_converted

        plugins = request.config.pluginmanager
        reporter = plugins.get_plugin("terminalreporter")
        capture = plugins.get_plugin("capturemanager")
        if reporter and capture and not default_model_converted(session.options.cache_dir):
            with capture.global_and_fixture_disabled():  # fixture output is captured otherwise
                reporter.write_line("\nshrinktests: converting the embedded SmolLM2 GGUF to a "
                                    "cached safetensors copy (once, about 20 s)")
    return session


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
    from shrinktests.snapshot import extension_for

    return snapshot.use_extension(extension_for(shrink_session.options.snapshot_dir))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    name = str(dict(item.user_properties).get("shrink_config", ""))
    session = item.config.stash.get(session_key, None)
    if name and session is not None and (report.when == "call" or report.outcome != "passed"):
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
        session.runs[name].outcomes[outcome] += 1
    return report


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
    baseline snapshots) rides with the reference; None for tests that are not ours."""
    name = nodeid.rsplit("::", 1)[-1]
    if name.startswith("test_atlas"):  # the atlas perturbs the reference model
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand this worker's summary data to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    shrink = session.config.stash.get(session_key, None)
    if workeroutput is None or shrink is None or not shrink.runs:
        return
    from shrinktests.report.terminal import summary_data

    workeroutput["shrinktests"] = json.dumps(summary_data(shrink))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: collect each worker's summary data as it finishes."""
    data = getattr(node, "workeroutput", {}).get("shrinktests")
    if data:
        node.config.stash.setdefault(worker_data_key, []).append(json.loads(data))


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
    if folder := config.getoption("shrink_report"):
        from shrinktests.report.files import write_report

        written = write_report(Path(folder), data)
        terminalreporter.write_line(
            f"shrinktests: report written: {', '.join(str(p) for p in written)}")
    recorder = config.pluginmanager.get_plugin("shrinktests-accept")
    if isinstance(recorder, AcceptRecorder):
        terminalreporter.write_line(recorder.summary())
