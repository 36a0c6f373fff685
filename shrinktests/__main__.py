"""``python -m shrinktests atlas ...``: see :mod:`shrinktests.cli`."""

import sys

from shrinktests.cli import main

sys.exit(main())
