"""The pytest side of shrinktests: hooks and fixtures (``plugin``), the behavioural tests users
import (``suite_tests``), their kinds and expected outcomes, the accept mode (``recording``),
snapshots, xdist scheduling (``distribute``), the status line (``progress_line``) and the
keys the hook modules share (``stash``). Everything else in the package runs without pytest.
"""
