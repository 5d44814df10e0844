# Two commands on a fresh machine: `make demo` runs the pipeline on the bundled dataset,
# `make test` runs the tests. Both install what they need first.
PYTHON ?= python3
DATASET ?= SYNTH-BTC-EUR_1H_20240101-20251231

.PHONY: install demo test test-all lint format check bench

# torch first: with no torch installed, a bare requirement pulls a multi-GB CUDA build; on a CPU
# machine `torch==2.13.0` takes the CPU build. An existing torch (e.g. CUDA on a GPU pod) is kept.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -r requirements-dev.txt

demo: install
	$(PYTHON) runpod_main.py --dataset $(DATASET) --preset demo --no-push

test: install
	$(PYTHON) -m pytest

test-all: install
	$(PYTHON) -m pytest -m ""

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

check: lint test

bench: install
	$(PYTHON) bench/bench_data_prep.py
	$(PYTHON) bench/bench_classifier.py
	$(PYTHON) bench/bench_env.py
	$(PYTHON) bench/bench_ppo.py
	$(PYTHON) bench/bench_end_to_end.py
	$(PYTHON) bench/make_benchmarks_md.py
