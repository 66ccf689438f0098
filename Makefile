# Set-up and the entry points of the README: `make run` (the main job) and `make test`;
# `make demo` runs the short invariance demonstration; `make lint` runs ruff (format and
# lint) and mypy, as CI does before the tests (.ci/run).
# Both create .venv on first use and install nfn-lab into it; the set-up is redone only
# when pyproject.toml changes (the stamp file below is older than it).

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.nfn-lab-installed
# torch is pinned in the same pip command as the project, so pip never swaps it for
# another build while resolving the other dependencies.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup run demo lint test

setup: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_PY)
	$(VENV_PY) -m pip install "$(TORCH)" -e ".[test,dev]"
	touch $(STAMP)

run: setup
	$(VENV_PY) -m nfn_lab.apps.main_job

demo: setup
	$(VENV_PY) -m nfn_lab.apps.demo

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(VENV_PY) -m pytest $(PYTEST_ARGS)
