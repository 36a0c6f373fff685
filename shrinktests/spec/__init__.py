"""The input layer: suites and configs files as validated data (``files``) and the options
both front ends share (``flags``). The options of one run are resolved by ``run.options``."""
