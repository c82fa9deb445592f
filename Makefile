# transmem: the two commands.
#   make demo   set up .venv, install, run the quick transfer benchmark on embedded data
#   make test   set up .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: setup demo test lint speed clean-venv

setup: $(VENV)/.installed-dev

# transmem and what it needs to run (make demo)
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# and the test tools (make test)
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/transmem benchmark digits --profile quick --zoo builtin --jobs 2 --out $(DEMO_OUT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

# style and layering: ruff (pinned in the dev extra) and the one-way imports check
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/python tests/test_architecture.py

speed: $(VENV)/.installed
	$(BIN)/transmem speed
