# Two promises: `make demo` and `make test` work on a fresh clone; both set up .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgecompress-installed

.PHONY: setup demo test test-all bench lint clean

setup: $(STAMP)

# torch first (the CPU wheel on local disk), then the project under a constraint that keeps that torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,tflite]" -c constraints.txt
	touch $(STAMP)

demo: setup
	$(VENV)/bin/edgecompress demo

test: setup
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install --quiet -e ".[dev,tflite,bench]" -c constraints.txt
	$(PY) benchmarks/run.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/quantization.py
	$(PY) benchmarks/pruning.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/distill_lowrank.py
	$(PY) benchmarks/robustness.py
	$(PY) benchmarks/nas.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache
