# Two commands do all set-up on a fresh machine:
#   make demo   train, sample and (later) serve the demo models on the bundled data
#   make test   lint, then run the test suite
# Each creates .venv from nothing when it is missing or setup.py changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= demo_output
# Test processes (pytest-xdist); each test file runs whole in one of them.
JOBS   ?= 2

.PHONY: demo test lint format bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/zoo demo --out $(OUT) --models-root serving/models

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile --durations=25

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.dcgan_throughput

clean:
	rm -rf $(VENV) $(OUT) runs .pytest_cache
