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

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt 2>&1 \
	  | { $(QUIET_PIP); }
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m workshop_utils.tooling.setup_check --fix
	touch $(STAMP)

workshop: setup
	$(BIN)/workshop lab

# Two sessions, both always run; `make test` fails when either fails.
# 1. the unit tests, in two processes with one thread each (pytest-xdist; a test file stays in one process,
#    so its module fixtures are built once): most of them start subprocesses or train tiny models, which
#    leave a core idle in one process;
# 2. every notebook alone (tests/notebooks/test_rerun.py), then the series in order (nbval) over what those runs made,
#    then the browser test: one process owning both cores. Each notebook runs twice, and the second run
#    must record the same numbers.
test: setup
	@status=0; \
	echo "== make test 1/2: unit tests (2 processes) =="; \
	OMP_NUM_THREADS=1 WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests --ignore=tests/notebooks \
	  -n 2 --dist loadfile --timeout=900 --durations=10 || status=1; \
	echo "== make test 2/2: the notebooks, alone then as a series (nbval), and in the browser =="; \
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests/notebooks notebooks --nbval-lax --timeout=900 \
	  --durations=15 || status=1; \
	exit $$status

# only the rerun/restart checks (without nbval, tests/notebooks/test_rerun.py runs the series itself)
test-rerun: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests/notebooks/test_rerun.py

# the fast folders (about a minute): the helpers, the data and its build scripts, the static gates
test-fast: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests/unit tests/data tests/static -n 2 --timeout=600

run-all: setup
	$(BIN)/workshop run-all

check-notebooks: setup
	$(BIN)/python -m workshop_utils.tooling.nbclean --check notebooks

clean-notebooks: setup
	$(BIN)/python -m workshop_utils.tooling.nbclean notebooks

clean:
	rm -rf $(VENV) outputs .cache
