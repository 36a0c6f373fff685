"""From pytest's options and ini keys to the run's session, once per pytest run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shrinktests.pytest_plugin.stash import error_key, session_key
from shrinktests.spec.flags import Flag

if TYPE_CHECKING:
    from shrinktests.session.session import ShrinkSession

#: the options only pytest takes (beside the shared ones of :mod:`shrinktests.spec.flags`)
PLUGIN_FLAGS = (
    Flag("numerics", "native: the machine's own kernels, as users run them (default); "
         "portable: every x86-64 CPU with AVX2 runs the same kernels, at one thread (torch's "
         "AVX2 code, MKL_CBWR=COMPATIBLE,STRICT, oneDNN capped at AVX2), for release gates that "
         "must reproduce bit for bit; slower", "", choices=("native", "portable"),
         default="native"),
    Flag("snapshots", "baseline snapshot folder (default: snapshots/ in the rootdir)", "DIR"),
    Flag("bench", "run the throughput benchmarks (test_throughput) too; also on with "
         "--benchmark-only/-save/-autosave/-compare/-json", "", switch=True),
    Flag("reference", "baseline distributions: 'stored' (the top-k file beside the snapshots; "
         "the baseline model is never loaded), 'live' (run it), 'auto' (stored when the file "
         "matches this run; default)", "", choices=("auto", "stored", "live"), default="auto"),
    Flag("report", "write summary.md (for a pull request), index.html (plots) and data.json "
         "into DIR", "DIR"),
    Flag("accept-failures", "record the accepted state of each config that ran: its greedy "
         "outputs and the behaviour tests it fails now (strict xfails later), in "
         "<snapshots>/accepted/<config>.toml (reviewed like snapshots)", "", switch=True),
)


def _path(config: pytest.Config, option: str, ini: str) -> Path | None:
    """An option's path relative to the working directory, an ini key's to the rootdir."""
    value = config.getoption(option) or config.getini(ini)
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else (Path.cwd() / p if config.getoption(option)
                                      else config.rootpath / p)


def run_request(config: pytest.Config) -> Any:
    from shrinktests.run.options import RunRequest

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
        workers=workers(config),
    )


def workers(config: pytest.Config) -> int:
    """How many processes run this session's tests at once: xdist's worker count (on the
    controller and on each worker alike, so both report the same thread count), else 1."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)  # xdist has made "auto" a number
    return n if isinstance(n, int) and n > 0 else 1


def configure(config: pytest.Config) -> None:
    """Validate the options and files once and keep the run's session in the stash (None
    when there is no configs file: an error only once a shrinktests test is collected)."""
    config.addinivalue_line(
        "markers", "shrinktests: a behavioural test generated from a suite and a config")
    config.stash[session_key] = None
    # known noise from torch/bitsandbytes internals, not from the code under test
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    from shrinktests.run.options import NotConfigured, OptionError, resolve
    from shrinktests.spec.files import SpecError

    if config.getoption("shrink_numerics") == "portable":
        enter_portable(config)
    request = run_request(config)
    if request.accept and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "shrinktests: --shrink-accept-failures records each config's outputs, which stay on "
            "the xdist worker that generated them: record in a single process (without -n)")
    try:
        options = resolve(request)
        from shrinktests.session.session import ShrinkSession

        session = ShrinkSession(options)  # reads the accepted records: a bad one is an error
    except NotConfigured as exc:
        config.stash[error_key] = f"{exc.problem}: pass --shrink-configs PATH"
        return
    except OptionError as exc:
        raise pytest.UsageError(f"shrinktests: --shrink-{exc.setting} {exc.problem}") from None
    except SpecError as exc:
        raise pytest.UsageError(f"shrinktests: {exc}") from None
    config.stash[session_key] = session
    if options.accept and not hasattr(config, "workerinput"):
        from shrinktests.accepted.record import FOLDER
        from shrinktests.pytest_plugin.recording import PLUGIN_NAME, AcceptRecorder

        recorder = AcceptRecorder(session, options.snapshot_dir / FOLDER)
        config.pluginmanager.register(recorder, PLUGIN_NAME)


def enter_portable(config: pytest.Config) -> None:
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
