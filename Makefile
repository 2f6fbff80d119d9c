# synthgen: set-up, demo and tests. Each target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check

.PHONY: install demo serve test test-full audit lint typecheck

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0  # first, and exactly this version: the CPU build
	$(PIP) install -e '.[train,test]'
	touch $@

install: $(VENV)/.installed

## make demo: 100 faces from the shipped model, in-process, into faces/
demo: install
	$(VENV)/bin/synthgen generate --count 100 --seed 0 --out faces

## make serve: the API and a worker on an embedded Redis, at http://127.0.0.1:8000
serve: install
	$(VENV)/bin/synthgen serve

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

## make test: lint, type check and the test suite with the fast subset of the reliability tests (what CI runs)
test: install lint typecheck
	bash scripts/install_deploy_tools.sh
	bash scripts/install_browser.sh
	$(PY) -m pytest

## make test-full: the same, plus the reliability tests at full size (marked `full`: 10 SIGKILLs of 20,000-image
## jobs, a 60 s overload, 1,000+ fuzzed requests, a 1,000,000-image soak); about an hour on 2 cores
test-full: install lint typecheck
	bash scripts/install_deploy_tools.sh
	bash scripts/install_browser.sh
	$(PY) -m pytest -m ""

## make audit: pip-audit against requirements.lock (exit 3 when it cannot reach its vulnerability data)
audit: install
	bash scripts/audit_dependencies.sh
