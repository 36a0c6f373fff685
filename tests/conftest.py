"""Fixtures for the plugin's own tests: a tiny project inside ``pytester`` on the real model."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import settings

# Property tests check results, not speed: a 2-core runner busy with other work ran two of
# them past hypothesis' default 200 ms deadline (318 ms once, 82 ms on the retry).
settings.register_profile("shrinktests", deadline=None)
settings.load_profile("shrinktests")

TINY_SUITE = """
[suite]
name = "tiny"
max_new_tokens = 8

[[prompt]]
id = "hello"
text = "Say hello to Anna."
checks = [{ check = "contains", value = "Anna" }]

[[prompt]]
id = "capital"
text = "What is the capital of France?"
checks = [{ check = "contains", value = "Paris" }, { check = "word_count", max = 50 }]
"""

TWO_CONFIGS = """
[settings]
reference = "baseline"
budgets = ["repetition <= 0.9"]

[[config]]
name = "baseline"
method = "dtype"
dtype = "float32"

[[config]]
name = "bf16"
method = "dtype"
dtype = "bfloat16"
budgets = ["kl_mean <= 0.05"]
"""

TEST_FILE = """
from shrinktests.suite_tests import (  # noqa: F401
    test_baseline_snapshot, test_constraint, test_degeneration, test_drift, test_throughput,
)
"""


@pytest.fixture(autouse=True)
def _inner_runs_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``make test`` (``-n 2``) each test runs in an xdist worker, whose environment
    says so (``PYTEST_XDIST_WORKER``); the inner pytest runs that many tests start would
    inherit it, and syrupy and pytest-benchmark read it there: syrupy then prints no
    snapshot report and pytest-benchmark no table. An inner run is a user's run."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real model cache, with the default model converted once for every inner run."""
    from shrinktests.run.model import cache_root, default_model_source

    default_model_source()
    return cache_root()


@pytest.fixture
def fresh_cache(tmp_path: Path, model_cache: Path) -> Path:
    """An empty results cache that still reuses the converted model (by symlink)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("models", "hashes"):
        (cache / sub).symlink_to(model_cache / sub, target_is_directory=True)
    return cache


ProjectMaker = Callable[..., pytest.Pytester]
T = TypeVar("T")


def load_or_spec_error(loader: Callable[[Path], T], path: Path) -> T | None:
    """A parser fed a fuzzed file: its result, or None once the error is checked to be a
    SpecError that names the file (any other exception fails the calling test)."""
    from shrinktests.spec.files import SpecError

    try:
        return loader(path)
    except SpecError as exc:
        assert str(exc).startswith(str(path))
        return None


@pytest.fixture
def shrink_project(pytester: pytest.Pytester, fresh_cache: Path) -> ProjectMaker:
    """Write a configs file, a suite and the one-line test module into the pytester folder."""

    def make(configs: str = TWO_CONFIGS, suite: str = TINY_SUITE) -> pytest.Pytester:
        suites = pytester.path / "suites"
        suites.mkdir(exist_ok=True)
        (suites / "configs.toml").write_text(textwrap.dedent(configs))
        (suites / "tiny.toml").write_text(textwrap.dedent(suite))
        (suites / "test_behaviour.py").write_text(TEST_FILE)
        pytester.makeini(f"[pytest]\naddopts = --shrink-cache={fresh_cache} -p no:cacheprovider\n")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return pytester

    return make


def workers_by_config(verbose_output: str) -> dict[str, set[str]]:
    """From ``-n 2 -v`` output, the xdist workers each config's tests ran on (keyed by the
    first ``-`` part of the parameter id: the config, or the case for config-less tests)."""
    found: dict[str, set[str]] = {}
    for worker, param in re.findall(r"^\[(gw\d+)\].*?::test_\w+\[([^\]]+)\]", verbose_output,
                                    re.M):
        found.setdefault(param.split("-")[0], set()).add(worker)
    return found
