"""The behavioural tests, where a suites folder imports them from (``suites/test_behaviour.py``);
they live in :mod:`shrinktests.pytest_plugin.suite_tests`."""

from shrinktests.pytest_plugin.suite_tests import *  # noqa: F403
from shrinktests.pytest_plugin.suite_tests import __all__  # noqa: F401
