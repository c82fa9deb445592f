# transmem: the two commands.
#   make demo   set up .venv, install, run the quick transfer benchmark on embedded data
#   make test   set up .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: setup demo test speed clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/transmem benchmark digits --profile quick --zoo builtin --jobs 2 --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q

speed: setup
	$(BIN)/transmem speed
