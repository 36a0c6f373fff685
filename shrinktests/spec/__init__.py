"""The input layer: suites and configs files as validated data (``files``), the one validator
of typed tables (``schema``) and the options of a run (``options``)."""
