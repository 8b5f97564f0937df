# Two entry points, each creating .venv on a fresh machine: `make test` (the suite CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[torch,test]'
	touch $@

.PHONY: install test
install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadfile tests
