# Every target creates or refreshes .venv first, so `make serve` and `make test`
# work on a fresh machine with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The TypeScript client (npm ci, then tsc) and the Deno example's cache, both from the
# registries once; the tests run Node and Deno offline against them.
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed
TS_DIST := $(TS)/dist/index.js
EDGE := examples/supabase-edge-function
DENO_DIR := $(CURDIR)/$(EDGE)/.deno
DENO_STAMP := $(DENO_DIR)/.installed

.PHONY: install serve test test-all lint proto docs migrate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: on these machines pip finds the CPU wheel on local disk
	# (pip.conf find-links); anything unpinned would pull a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund
	touch $@

$(TS_DIST): $(TS_STAMP) $(TS)/tsconfig.json $(wildcard $(TS)/src/*.ts $(TS)/src/gen/*/*/*/*.ts)
	cd $(TS) && npm run build
	touch $@

$(DENO_STAMP): $(STAMP) $(EDGE)/deno.json $(EDGE)/deno.lock
	cd $(EDGE) && DENO_DIR=$(DENO_DIR) $(CURDIR)/$(VENV)/bin/deno cache --frozen --config deno.json index.ts
	touch $@

install: $(STAMP) $(TS_DIST) $(DENO_STAMP)

serve: install
	$(PY) -m service serve

migrate: install
	$(PY) -m service migrate

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The database-free unit layer (merge, plan, fusion, filters, scores): seconds, no PostgreSQL.
.PHONY: test-unit
test-unit: install
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check service ingest devtools tests benchmarks scripts
	$(VENV)/bin/ruff format --check service ingest devtools tests benchmarks scripts
	$(VENV)/bin/mypy
	$(PY) scripts/gen_protos.py --check
	$(PY) -m scripts.gen_settings_docs --check
	cd $(TS) && npx tsc -p tsconfig.json --noEmit
	cd $(EDGE) && DENO_DIR=$(DENO_DIR) $(CURDIR)/$(VENV)/bin/deno check --cached-only --config deno.json index.ts

proto: install
	$(PY) scripts/gen_protos.py

docs: install
	$(PY) -m scripts.gen_settings_docs

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(TS)/node_modules $(TS)/dist $(DENO_DIR)
