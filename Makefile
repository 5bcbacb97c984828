# Every target creates or refreshes .venv first, so `make serve` and `make test`
# work on a fresh machine with nothing installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test test-all lint proto docs migrate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: on these machines pip finds the CPU wheel on local disk
	# (pip.conf find-links); anything unpinned would pull a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(PY) -m service serve

migrate: install
	$(PY) -m service migrate

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check service ingest tests benchmarks scripts
	$(VENV)/bin/ruff format --check service ingest tests benchmarks scripts
	$(VENV)/bin/mypy
	$(PY) scripts/gen_protos.py --check
	$(PY) -m scripts.gen_settings_docs --check

proto: install
	$(PY) scripts/gen_protos.py

docs: install
	$(PY) -m scripts.gen_settings_docs

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
