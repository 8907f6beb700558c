# The workshop's two commands:  `make workshop` (set up, then JupyterLab)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup workshop test test-fast run-all clean-notebooks check-notebooks clean

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m workshop_utils.setup_check --fix
	touch $(STAMP)

workshop: setup
	$(BIN)/jupyter lab notebooks/

test: setup
	WORKSHOP_PROFILE=smoke $(BIN)/python -m pytest -q tests notebooks --nbval-lax --timeout=900

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
