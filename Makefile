# Everything installs from pyproject.toml into .venv; nothing relies on the machine's own packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit soak bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/galaxy-actors demo --devices 8 --flaky 0.25 --duration 20

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy src/galaxy_actors

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

# The broad searches: 10,000 scenarios per property, and every broken variant of
# tests/test_harness_catches_bugs.py searched for and shrunk from scratch.
soak: setup
	GALAXY_ACTORS_SCENARIOS=10000 GALAXY_ACTORS_HARNESS_SEARCH=1 $(BIN)/pytest -q \
		tests/test_properties.py tests/test_journal_kill.py tests/test_harness_catches_bugs.py \
		-p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
