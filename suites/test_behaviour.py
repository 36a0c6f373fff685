"""Behavioural regression tests: one line pulls in shrinktests' parametrized tests.

Every config in configs.toml x every prompt of every suite file here becomes a test, e.g.
``test_drift[nf4-calibration.german-greeting]``; run one config with ``pytest suites/ -k nf4``.
``test_throughput`` (one per config) is a pytest-benchmark test, run on request
(``--shrink-bench``, ``--benchmark-only``).
"""

from shrinktests.suite_tests import (  # noqa: F401
    test_aggregate,
    test_atlas,
    test_atlas_recipe,
    test_baseline_snapshot,
    test_constraint,
    test_degeneration,
    test_drift,
    test_throughput,
)
