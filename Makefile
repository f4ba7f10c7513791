# One entry point for people and CI. Every target sets up what it needs first.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.modelfleet-installed
STACK  ?= prod

.PHONY: setup plan test test-unit bench clean

setup: $(STAMP)

# Re-run only when the dependency pins change; `pip install -e` keeps the code itself live.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

plan: setup
	$(BIN)/modelfleet plan --stack $(STACK)

test: setup
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build
