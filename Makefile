# Two commands set everything up on a fresh machine:
#   make run    create .venv, install the appliance, serve configs/cluster.yaml
#   make test   create .venv, install the appliance with its test tools, lint and test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= configs/cluster.yaml

.PHONY: run test lint check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/appliance serve -c $(CONFIG)

check: $(VENV)/.run-installed
	$(BIN)/appliance check -c $(CONFIG)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check appliance tests
	$(BIN)/ruff format --check appliance tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) dist build *.egg-info
