# Two commands are all a new user needs (see README): `make demo` and `make test`.
# Each creates .venv on first use and installs the package with the exact versions of requirements/lock.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml requirements/lock.txt
	@test -n "$(PYTHON)" || { echo "Python 3.10+ is needed (python3.11 or python3 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq -c requirements/lock.txt -e ".[dev,serve,export,ray]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deepfake demo $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu"

test-all: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build *.egg-info
