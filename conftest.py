"""Project-wide pytest setup: offline hub, the pytester fixture, long tests first."""

import os

import pytest

# Nothing may be fetched from a model hub at run time; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that run for many minutes go first: under `-n 2 --dist worksteal` one worker
    # starts on them while the other takes the rest, stealing from the first one's queue.
    # Left where they were, they would start last and run alone at the end.
    items.sort(key=lambda item: "long_pole" not in item.keywords)
