# Two commands for a fresh machine with Python 3.11+:  make serve   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# pytest-xdist workers; each worker gets its own databases
TEST_WORKERS ?= 2

.PHONY: serve test lint format bench-core bench-search clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fhir-server needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

serve: $(BIN)/.installed
	HOST=$(HOST) PORT=$(PORT) $(BIN)/fhir-server serve

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-core: $(BIN)/.installed
	$(BIN)/python bench/core.py $(BENCH_ARGS)

bench-search: $(BIN)/.installed
	$(BIN)/python bench/search.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) fhir-server.db fhir-server.db-wal fhir-server.db-shm .pytest_cache .ruff_cache
