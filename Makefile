# The two README commands: `make demo` (the whole pipeline on the built-in task) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU torch first, pinned: it satisfies the `torch>=2.13` extras without pulling CUDA.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,teacher]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m sciqa_jax.demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/bench_t5.py

clean:
	rm -rf runs
