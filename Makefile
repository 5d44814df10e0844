# Two commands on a fresh machine: `make demo` runs the pipeline on the bundled dataset,
# `make test` runs the tests. Both install what they need first.
#
# Where packages go: into the active virtual environment (or conda env) if there is one;
# otherwise into a project `.venv` that this Makefile creates. The `.venv` sees the system's
# packages (--system-site-packages), so a GPU pod's preinstalled CUDA torch is reused and nothing
# is installed twice; Debian/Ubuntu's system Python refuses `pip install` outside a venv
# ("externally-managed-environment", PEP 668), and nothing here installs into it.
PYTHON ?= python3
DATASET ?= SYNTH-BTC-EUR_1H_20240101-20251231
TORCH_VERSION ?= 2.13.0
# PyTorch's CPU-only wheels: a bare `pip install torch` on a Linux machine without a GPU pulls the
# CUDA build and ~2.5 GB of NVIDIA libraries it cannot use.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Without a network pip retried that index 20-50 times before giving up (issue 22 item 19): one
# retry and a 15 s timeout per request make an unreachable index fail in seconds.
PIP_NET_OPTS ?= --retries 1 --timeout 15

ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PY := $(PYTHON)
else
PY := .venv/bin/python
endif

.PHONY: install venv demo test test-fast test-all lint format typecheck check bench

venv:
ifeq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
	@test -x .venv/bin/python || $(PYTHON) -m venv --system-site-packages .venv || { \
	  echo "error: could not create .venv with $(PYTHON) -m venv; on Debian/Ubuntu install the venv module first: apt-get install python3-venv" >&2; exit 1; }
endif

# torch first, and only when missing: a GPU machine (nvidia-smi present) gets PyPI's CUDA build,
# a CPU machine the CPU-only build from PyTorch's index (falling back to what the configured
# indexes offer when that index cannot be reached). An existing torch (e.g. CUDA on a pod) is kept.
# Last the project itself, editable, so its packages and scripts import from any folder without
# sys.path patches (issue 9 item 7); --no-deps: the requirements were installed the line before.
install: venv
	@$(PY) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then \
	    $(PY) -m pip install -q torch==$(TORCH_VERSION); \
	  else \
	    $(PY) -m pip install -q $(PIP_NET_OPTS) torch==$(TORCH_VERSION) --extra-index-url $(TORCH_CPU_INDEX); \
	  fi; }
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -e . --no-deps

demo: install
	$(PY) runpod_main.py --dataset $(DATASET) --preset demo --no-push

test: install
	$(PY) -m pytest

# `make test-fast`: the unit tier only (no training, subprocess or git; well under a minute) for a
# quick check while editing; `make test` stays the full default run (issue 9 item 7).
test-fast: install
	$(PY) -m pytest -m "unit and not slow"

test-all: install
	$(PY) -m pytest -m ""

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Type check the library (issue 9 item 7); .ci/run runs it after the tests and the linter.
typecheck: install
	$(PY) -m mypy pipeline

check: lint test

bench: install
	$(PY) bench/bench_data_prep.py
	$(PY) bench/bench_classifier.py
	$(PY) bench/bench_step5_demo.py
	$(PY) bench/bench_classifier_ladder.py
	$(PY) bench/bench_env.py
	$(PY) bench/bench_ppo.py
	$(PY) bench/bench_end_to_end.py
	$(PY) bench/bench_agent_learning.py
	$(PY) bench/bench_agent_ladder.py
	$(PY) bench/bench_chance_test.py
	$(PY) bench/bench_tuning.py
	$(PY) bench/make_benchmarks_md.py
