"""The behavioural tests, where a suite folder imports them from (``suites/test_behaviour.py``:
``from shrinktests.suite_tests import test_drift, ...``); they live in
:mod:`shrinktests.pytest_plugin.suite_tests`."""

from shrinktests.pytest_plugin.suite_tests import (  # noqa: F401
    test_aggregate,
    test_atlas,
    test_atlas_recipe,
    test_baseline_snapshot,
    test_constraint,
    test_degeneration,
    test_drift,
    test_throughput,
)
