# The workshop's two commands:  `make workshop` (set up, then JupyterLab)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints one warning per package for unused local index folders on some machines: keep logs readable
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup workshop test test-rerun test-fast run-all clean-notebooks check-notebooks clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m workshop_utils.setup_check --fix
	touch $(STAMP)

workshop: setup
	$(BIN)/workshop lab

# unit tests and every notebook alone (tests/test_rerun.py), then the series in order (nbval) over what
# those runs made: each notebook runs twice, and the second run must record the same numbers
test: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests notebooks --nbval-lax --timeout=900 --durations=15

# only the rerun/restart checks (without nbval, tests/test_rerun.py runs the series itself)
test-rerun: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests/test_rerun.py

test-fast: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests -m "not slow" --timeout=600

run-all: setup
	$(BIN)/workshop run-all

check-notebooks: setup
	$(BIN)/python -m workshop_utils.nbclean --check notebooks

clean-notebooks: setup
	$(BIN)/python -m workshop_utils.nbclean notebooks

clean:
	rm -rf $(VENV) outputs .cache
