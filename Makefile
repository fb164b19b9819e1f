# Two front-door commands: `make serve` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install serve test bench soak clean

# torch is installed first and pinned to the CPU build, so nothing pulls the CUDA wheels.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# The page test drives Debian's Chromium (Playwright's own browser download cannot work offline).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "the page test needs Debian's chromium: sudo apt-get install chromium"; exit 1; }
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y chromium || \
		{ apt-get update && apt-get install -y chromium; }

serve: install
	$(BIN)/serve run serve_config.yaml

test: install $(CHROMIUM)
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run.py

soak: install
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(VENV) build *.egg-info
