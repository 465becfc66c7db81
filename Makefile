# The two commands in README.md: `make demo` (set up + run the loop locally) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo up test lint typecheck bench clean

$(STAMP): pyproject.toml package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, exactly pinned: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[local,dev]"
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/tuneloop demo

up: setup
	$(BIN)/tuneloop up

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: setup
	$(BIN)/mypy

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	# pyproject.toml sets filterwarnings = error (plus reasoned ignores); a -W error flag here
	# would override those ignores.
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/validate.py --mb 200
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/score.py

clean:
	rm -rf .tuneloop
