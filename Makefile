# Two commands from a fresh clone: `make run` (the loop on the digital twin) and `make test`.
# Both create .venv and install the project with pinned versions on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "scopeflow needs Python >= 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# The CPU build first: an unpinned torch pulls several GB of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/scopeflow run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The layers and cycles contracts in pyproject.toml ([tool.importlinter]).
	$(BIN)/lint-imports
	bash scripts/install-browser.sh
	# PostgreSQL for the store's tests (they start a throwaway cluster on loopback).
	bash scripts/postgres-test.sh install
	$(BIN)/pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .scopeflow
