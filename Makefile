# The two README commands: `make demo` (the whole pipeline on the built-in task) and `make test`
# (`make test-fast` for the unit tests alone).
PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
WORKDIR ?= runs/demo
DEMO_CONFIG ?= configs/demo.py
# Overrides passed to every script of the demo (they share one config schema).
DEMO_FLAGS ?=
CFG = --config $(DEMO_CONFIG) --config.cache_dir=$(WORKDIR)/cache $(DEMO_FLAGS)

.PHONY: setup demo demo-pipeline test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# CPU torch first, pinned: it satisfies the `torch>=2.13` extras without pulling a CUDA build.
	$(VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(VENV)/bin/python -m pip install -q -e ".[test,teacher]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(MAKE) --no-print-directory demo-pipeline

# The pipeline itself, for any interpreter (the test suite runs it with the fast config).
demo-pipeline:
	$(PY) generate.py $(CFG)
	$(PY) train.py $(CFG) --workdir $(WORKDIR)/two_stage
	$(PY) train.py $(CFG) --config.objective.name=answer_only --workdir $(WORKDIR)/answer_only
	$(PY) evaluate.py $(CFG) --teacher --split test --name teacher --results_dir $(WORKDIR)
	$(PY) evaluate.py $(CFG) --checkpoint $(WORKDIR)/answer_only --split test --name answer_only --results_dir $(WORKDIR)
	$(PY) evaluate.py $(CFG) --checkpoint $(WORKDIR)/two_stage --split test --name two_stage --results_dir $(WORKDIR)

# Two workers: the tests are mostly single-threaded XLA compilation, so two run side by side even
# on a 2-core machine. `test` is the whole suite (CI runs it); `test-fast` is the inner loop, the
# unit tests without the `slow` ones (scripts run as subprocesses, end-to-end runs).
test: setup
	$(PY) -m pytest -n 2 -q tests

test-fast: setup
	$(PY) -m pytest -m "not slow" -n 2 -q tests

bench: setup
	$(PY) bench/bench_t5.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_eval.py

# The LLM baseline against lm-evaluation-harness itself (tools/lm_eval_check/check.py): lm-eval
# goes into its own venv under build/, never the project's; `make test` does not need it.
LM_EVAL_VENV ?= build/lm-eval-venv
.PHONY: lm-eval-check
lm-eval-check: setup
	test -x $(LM_EVAL_VENV)/bin/lm_eval || ($(PYTHON) -m venv $(LM_EVAL_VENV) && \
	  $(LM_EVAL_VENV)/bin/python -m pip install -q "torch==2.13.0" "lm-eval[hf]==0.4.13")
	$(PY) tools/lm_eval_check/check.py --lm_eval_python $(LM_EVAL_VENV)/bin/python

clean:
	rm -rf runs
