# The two commands of the README. Each installs what it needs, once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test audit bench-serve bench-memory bench-soak clean

# The demo runs what docker-compose.yml runs: JupyterLab from the venv (extra `jupyter`) and
# Prometheus and redis_exporter from Debian (system-packages.sh demo). Grafana is no Debian
# package: the demo runs it when it is installed, and otherwise says where to get it.
demo: $(VENV)/.installed-demo
	@scripts/system-packages.sh demo
	$(BIN)/nextwatch demo

test: $(VENV)/.installed-test
	@scripts/system-packages.sh test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Known vulnerabilities in the pinned versions (constraints.txt): fails on one; says so, and
# passes, when no vulnerability source can be reached (scripts/audit.py).
audit: $(VENV)/.installed-test
	$(BIN)/python scripts/audit.py constraints.txt

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
	$(BIN)/pip install -q -c constraints.txt -e '.[sequence]'
	touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[sequence,jupyter]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[test,sequence]'
	touch $@

clean:
	rm -rf $(VENV) .nextwatch .pytest_cache
