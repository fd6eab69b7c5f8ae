# descent: make targets. Every target sets up .venv first; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install descent with its test and dev tools

run: $(STAMP)  ## open the dashboard on the built-in dataset
	$(BIN)/descent

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest

bench: $(STAMP)  ## print the speed table (engine vs numpy reference, same run)
	$(BIN)/descent bench

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check engine tui tests
	$(BIN)/mypy

clean:  ## remove .venv and caches
	rm -rf $(VENV) build *.egg-info .pytest_cache

.PHONY: help venv run test bench lint clean
