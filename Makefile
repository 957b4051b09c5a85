# Two commands for a fresh machine with Python 3.11+:  make serve   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# pytest-xdist workers; each worker gets its own databases
TEST_WORKERS ?= 2

# Browser tests use Debian's chromium and axe-core from npm (tests/web/package-lock.json); never a downloaded browser.
WEB_TESTS = tests/web
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = 1
# An EHR that is not ours for end-to-end tests: Medplum's FHIR store from npm (tests/foreign_ehr/package-lock.json)
# behind a SMART stand-in, run with the machine's Node.js.
FOREIGN_EHR = tests/foreign_ehr

.PHONY: serve test lint format messages screenshots bench-core bench-search bench-clinician bench-reporting clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fhir-server needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(WEB_TESTS)/node_modules/.installed: $(WEB_TESTS)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(WEB_TESTS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the accessibility tests will skip (apt-get install npm; CI installs it)"; fi

$(FOREIGN_EHR)/node_modules/.installed: $(FOREIGN_EHR)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(FOREIGN_EHR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the foreign-EHR tests will skip (apt-get install npm; CI installs it)"; fi

# The first start makes a development secret key (fhir-server.key, owner-only) unless one is configured
# (FHIR_SERVER_SECRET_KEY or FHIR_SERVER_SECRET_KEY_FILE, in the environment or .env): docs/security.md.
serve: $(BIN)/.installed
	$(BIN)/fhir-server keys new-secret --file fhir-server.key --unless-configured
	HOST=$(HOST) PORT=$(PORT) FHIR_SERVER_SANDBOX=$${FHIR_SERVER_SANDBOX:-true} $(BIN)/fhir-server serve

test: $(BIN)/.installed $(WEB_TESTS)/node_modules/.installed $(FOREIGN_EHR)/node_modules/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Retake docs/screenshots/ (the rating form on a 360 px phone and in an 800 px EHR iframe); look at them before
# committing.
screenshots: $(BIN)/.installed
	FHIR_SERVER_SAVE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/web/test_layout_and_iframe.py tests/web/test_clinician_view.py -k "sqlite and (phone or iframe or chart)"

# The app's message catalogue: extract every marked string (babel.cfg) into app.pot, then merge it into each
# language's app.po (the shipped ones and the example packs').  New or changed strings come out untranslated (or fuzzy): translate them, remove the fuzzy
# marks, and the server starts again (it refuses a catalogue with a missing or fuzzy translation).
LOCALES = fhir_server/i18n/locales
messages: $(BIN)/.installed
	$(BIN)/pybabel extract --mapping-file babel.cfg --output-file $(LOCALES)/app.pot --no-location --sort-output \
		--project fhir-server --copyright-holder "fhir-server contributors" --msgid-bugs-address "" --width 120 .
	for folder in $(LOCALES) examples/packs/*/locales; do \
		$(BIN)/pybabel update --domain app --input-file $(LOCALES)/app.pot --output-dir $$folder --width 120 \
			--ignore-obsolete --no-fuzzy-matching || exit 1; \
	done

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-core: $(BIN)/.installed
	$(BIN)/python bench/core.py $(BENCH_ARGS)

bench-clinician: $(BIN)/.installed
	$(BIN)/python bench/clinician.py

bench-search: $(BIN)/.installed
	$(BIN)/python bench/search.py $(BENCH_ARGS)

bench-reporting: $(BIN)/.installed
	$(BIN)/python bench/reporting.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(WEB_TESTS)/node_modules $(FOREIGN_EHR)/node_modules fhir-server.db fhir-server.db-wal fhir-server.db-shm fhir-server.db-writer .pytest_cache .ruff_cache
