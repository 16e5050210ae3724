# Every target does its own set-up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BENCH_DATA ?= $(HOME)/.cache/headless-bench

.PHONY: setup data demo demo-sweep test test-fast run-ids lint bench gpu-check slurm-up slurm-down clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

data: setup
	$(BIN)/bench data demo-text
	$(BIN)/bench data demo-faces
	$(BIN)/bench data demo-sst2

demo: data
	$(BIN)/bench run suites/demo/lm.yaml
	$(BIN)/bench report suites/demo/lm.yaml
	$(BIN)/bench run suites/demo/encoder.yaml
	$(BIN)/bench report suites/demo/encoder.yaml
	$(BIN)/bench run suites/demo/faces.yaml
	$(BIN)/bench report suites/demo/faces.yaml

demo-sweep: data
	$(BIN)/bench sweep suites/demo/sweep.yaml --workers 2
	$(BIN)/bench report suites/demo/sweep.yaml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: data lint
	$(BIN)/python -m pytest -q

# The edit loop: the tests that train no real model.
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

# After a deliberate change of a suite or a default: record the suites' new run ids.
run-ids: setup
	$(BIN)/python tests/support/suite_run_ids.py

bench: data
	$(BIN)/python benchmarks/run_all.py

gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out reports/gpu-check.json

# A real one-node SLURM cluster (Debian's slurm-wlm, slurmdbd, mariadb-server, munge) to try
# `--executor slurm` on by hand; it prints the SLURM_CONF to export. Needs root.
slurm-up: setup
	PYTHONPATH=tests $(BIN)/python -m support.slurm_cluster up

slurm-down: setup
	PYTHONPATH=tests $(BIN)/python -m support.slurm_cluster down

clean:
	rm -rf $(VENV)
