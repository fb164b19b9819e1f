# Two front-door commands: `make serve` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install serve lint test test-fast bench soak profile compare-faces clean

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

# The Redis tests run Debian's redis-server, started and stopped by the tests themselves.
REDIS := /usr/bin/redis-server
$(REDIS):
	@test "$$(id -u)" = 0 || { echo "the Redis tests need Debian's redis-server: sudo apt-get install redis-server"; exit 1; }
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y redis-server || \
		{ apt-get update && apt-get install -y redis-server; }

# The alert rules' unit tests and the end-to-end test run Debian's Prometheus (and its promtool).
PROMETHEUS := /usr/bin/prometheus
$(PROMETHEUS):
	@test "$$(id -u)" = 0 || { echo "the monitoring tests need Debian's prometheus: sudo apt-get install prometheus"; exit 1; }
	export DEBIAN_FRONTEND=noninteractive; apt-get install -y prometheus || \
		{ apt-get update && apt-get install -y prometheus; }

serve: install
	$(BIN)/serve run serve_config.yaml

# Lint, format and types are checked, not hoped for: `make test` runs this first.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(CHROMIUM) $(REDIS) $(PROMETHEUS)
	$(BIN)/python -m pytest

# The tests that need no Ray cluster and no browser: seconds, for the edit-test loop.
test-fast: install $(REDIS) $(PROMETHEUS)
	$(BIN)/python -m pytest -m "not cluster"

bench: install
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.video
	$(BIN)/python -m benchmarks.large
	$(BIN)/python -m benchmarks.convert

soak: install
	$(BIN)/python -m benchmarks.soak

# Where a miss's CPU goes, by process and by thread (py-spy names the threads).
profile: install
	$(BIN)/pip install --quiet -e '.[test,profile]'
	$(BIN)/python -m benchmarks.profile

# The face-detector comparison needs the other candidate, OpenCV 4.x (160 MB, not served).
compare-faces: install
	$(BIN)/pip install --quiet -e '.[test,compare]'
	$(BIN)/python -m benchmarks.faces

clean:
	rm -rf $(VENV) build *.egg-info
