# Courtyard: `make run` starts everything, `make test` runs everything. `make help` lists the rest.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_WORKERS ?= auto
# gettext catalogs (core/i18n.py says how to write a message): English ids, one .po per other language.
TRANSLATIONS := web/translations
CATALOGS := $(wildcard $(TRANSLATIONS)/*/LC_MESSAGES/messages.po)
# The markers of core.i18n beside Babel's defaults (_, gettext, ngettext ...); tests/core/test_i18n.py uses the same.
I18N_KEYWORDS := -k _l -k _ln:1,2 -k _n:1,2
I18N_IGNORE := .* ._ __pycache__ var node_modules tests bench migrations docs
# Citus source for `make test-citus` (a test tool, never part of the product; see docs/scaling.md).
CITUS_ARCHIVE ?= ../shared/citus/citus-14.0.1.tar.gz
# pytest-xdist processes for test-citus (the cluster itself always has two Citus workers).
CITUS_PYTEST_WORKERS ?= 2

help: ## List the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null

/usr/bin/wrk:
	$(SUDO) apt-get update -qq
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null

# The compiled catalogs are build products (not in git): rebuilt whenever their .po changes.
$(TRANSLATIONS)/%/LC_MESSAGES/messages.mo: $(TRANSLATIONS)/%/LC_MESSAGES/messages.po $(BIN)/.installed
	$(BIN)/pybabel -q compile -i $< -o $@ -l $*

install: $(BIN)/.installed node_modules/.installed $(CATALOGS:.po=.mo) ## Create .venv, install the project and the front-end packages, compile the catalogs

i18n: $(BIN)/.installed ## Extract messages into web/translations/*/messages.po (then translate), and compile them
	$(BIN)/pybabel -q extract -F babel.cfg $(I18N_KEYWORDS) --ignore-dirs="$(I18N_IGNORE)" --add-location=file \
		--sort-output --no-wrap -c TRANSLATORS: --project=Courtyard -o $(TRANSLATIONS)/messages.pot .
	$(BIN)/pybabel -q update -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS) --ignore-obsolete --no-wrap
	$(BIN)/pybabel -q compile -d $(TRANSLATIONS) --statistics

run: install ## Start PostgreSQL, Redis, web, worker and beat with demo data (Ctrl-C stops all)
	$(BIN)/courtyard up

lint: install ## ruff, mypy and the import-layer contract
	$(BIN)/ruff check platform tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: install /usr/bin/chromium lint ## Lint, then the whole suite against real PostgreSQL, Redis and Chromium
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider

test-citus: install /usr/bin/chromium ## The whole suite on a 3-node Citus cluster (builds Citus once into var/citus/)
	@test -f "$(CITUS_ARCHIVE)" || { echo "Citus source archive not found: $(CITUS_ARCHIVE)" >&2; \
	  echo "Pass its path: make test-citus CITUS_ARCHIVE=/path/to/citus-14.0.1.tar.gz" >&2; exit 2; }
	@# Also collects tests/citus/ (only Citus can show those): tests/conftest.py ignores that folder
	@# unless the cluster script has set COURTYARD_TEST_CITUS.
	$(BIN)/python tests/citus/cluster.py --archive "$(CITUS_ARCHIVE)" run -- \
	  $(BIN)/pytest -n $(CITUS_PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider $(PYTEST_ARGS)

bench: install /usr/bin/wrk ## Benchmarks: provisioning, fleet migration, request path, CRM at scale (see bench/README.md)
	$(BIN)/python bench/tenants.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/crm.py

clean: ## Remove var/ (all local data) and the virtualenv
	rm -rf var $(VENV) node_modules

.PHONY: help install i18n run lint test test-citus bench clean
