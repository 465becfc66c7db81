# The two commands in README.md: `make demo` (set up + run the loop locally) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The offline IaC checks (checkov, pycep-parser) in their own venv: checkov pins its own
# dependencies, which must not move the app's.
IAC_VENV  := .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed

.PHONY: setup demo up test lint typecheck bench clean iac

$(STAMP): pyproject.toml package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, exactly pinned: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[local,dev]"
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)

$(IAC_STAMP): scripts/iac-requirements.txt
	test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r scripts/iac-requirements.txt
	touch $(IAC_STAMP)

# infra/: every .bicep parses, checkov reports no failed check (suppressions carry a reason).
iac: $(IAC_STAMP)
	BC_SKIP_MAPPING=TRUE $(IAC_VENV)/bin/python scripts/check_iac.py

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
	# would override those ignores. test_checkov runs scripts/check_iac.py, which `make iac`
	# runs next: deselected here so one `make test` runs checkov once, not twice.
	$(BIN)/python -m pytest --deselect tests/infra/test_checkov.py::test_checkov_finds_no_unexplained_failure
	$(MAKE) iac

bench: setup
	$(BIN)/python bench/validate.py --mb 200
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/score.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/ledger.py

clean:
	rm -rf .tuneloop
