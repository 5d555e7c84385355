# The two commands of the README. Each installs what it needs, once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench-serve bench-memory bench-soak clean

demo: $(VENV)/.installed
	@scripts/system-packages.sh demo
	$(BIN)/nextwatch demo

test: $(VENV)/.installed-test
	@scripts/system-packages.sh test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench-serve: $(VENV)/.installed-test
	@scripts/system-packages.sh bench
	$(BIN)/python bench/serve.py

bench-memory: $(VENV)/.installed-test
	@scripts/system-packages.sh bench
	$(BIN)/python bench/memory.py

bench-soak: $(VENV)/.installed-test
	@scripts/system-packages.sh bench
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

$(VENV)/.venv-created:
	@scripts/system-packages.sh demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.venv-created pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .nextwatch .pytest_cache
