"""The pytest plugin (registered through the ``pytest11`` entry point): hooks and fixtures.

Each hook hands off in a line or two. Beside this module: ``configure`` (options to the run's
session; suites and configs validated once, a bad file is a usage error, exit code 4),
``collect`` (parametrization, skips, xfails and accepted regressions), ``terminal`` (header,
status line, summary and report files), ``distribute`` (xdist) and ``recording`` (accept
mode); the options are defined once in :mod:`shrinktests.spec.flags`, shared with the
``python -m shrinktests`` command. Everything else is the
:class:`~shrinktests.session.session.ShrinkSession` kept in ``config.stash``. Importing this module
is cheap: numpy, torch and transformers load only when a figure or a model is needed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from shrinktests.pytest_plugin.collect import (
    count_outcome,
    expect_accepted,
    mark_items,
    parametrize,
)
from shrinktests.pytest_plugin.configure import PLUGIN_FLAGS, configure, get_session
from shrinktests.pytest_plugin.distribute import (  # noqa: F401  # hooks pytest reads from this module
    pytest_cmdline_main,
    pytest_configure_node,
    pytest_sessionfinish,
    pytest_testnodedown,
    pytest_xdist_make_scheduler,
)
from shrinktests.pytest_plugin.stash import session_key
from shrinktests.pytest_plugin.terminal import (
    announce_conversion,
    header_lines,
    show_progress,
    write_summary,
)
from shrinktests.spec.flags import SHARED

if TYPE_CHECKING:
    from shrinktests.session.session import ShrinkSession


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shrinktests", "behavioural regression tests for compressed LLMs")
    for flag in (*SHARED, *PLUGIN_FLAGS):
        group.addoption(f"--shrink-{flag.name}", **flag.kwargs())
    parser.addini("shrink_model", "default for --shrink-model", default="")
    parser.addini("shrink_configs", "default for --shrink-configs", default="")
    parser.addini("shrink_suites", "default suite files", type="linelist", default=[])
    parser.addini("shrink_snapshots", "default for --shrink-snapshots", default="")
    parser.addini("shrink_device", "default for --shrink-device (default: auto)", default="auto")


def pytest_configure(config: pytest.Config) -> None:
    configure(config)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    return header_lines(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize(metafunc)


def pytest_collection(session: pytest.Session) -> None:
    shrink = session.config.stash.get(session_key, None)
    if shrink is not None:  # the atlas's test ids need the model's layer count
        announce_conversion(session.config, shrink)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_items(config, items)


def pytest_runtest_setup(item: pytest.Item) -> None:
    expect_accepted(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    count_outcome(item, report)
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    write_summary(terminalreporter, config)


@pytest.fixture(scope="session")
def shrink_session(request: pytest.FixtureRequest) -> ShrinkSession:
    """The run's :class:`ShrinkSession` (model source, configs, suites, results)."""
    session = get_session(request.config)
    announce_conversion(request.config, session)
    show_progress(request.config, session)
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
    from shrinktests.pytest_plugin.snapshot import extension_for

    return snapshot.use_extension(extension_for(shrink_session.options.snapshot_dir))
