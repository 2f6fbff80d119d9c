# synthgen: set-up, demo and tests. Each target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --quiet --disable-pip-version-check

.PHONY: install install-dev demo serve train test test-full audit lint typecheck

# What generation and serving need (onnxruntime, FastAPI, Redis): no torch, no test tools.
# (--no-compile: modules are byte-compiled on first import instead of all at install; half the install time)
$(VENV)/.installed-service: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --no-compile -e .
	touch $@

# Training, export and the tests on top of it: torch first, and exactly this version (the CPU build).
$(VENV)/.installed-dev: $(VENV)/.installed-service
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,test]'
	touch $@

install: $(VENV)/.installed-service
install-dev: $(VENV)/.installed-dev

## make demo: 100 faces from the shipped model, in-process, into faces/ (installs the service only)
demo: install
	$(VENV)/bin/synthgen generate --count 100 --seed 0 --out faces

## make serve: the API and a worker on an embedded Redis, at http://127.0.0.1:8000
serve: install
	$(VENV)/bin/synthgen serve

## make train: train a model into runs/default (installs torch); ARGS="--count 30000 --epochs 10 --threads 1" to size it
train: install-dev
	$(VENV)/bin/synthgen train --out runs/default $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy

## make test: lint, type check and the test suite with the fast subset of the reliability tests (what CI runs)
test: install-dev lint typecheck
	bash scripts/install_deploy_tools.sh
	bash scripts/install_browser.sh
	bash scripts/install_redis.sh
	$(PY) -m pytest

## make test-full: the same, plus the reliability tests at full size (marked `full`: 10 SIGKILLs of 20,000-image
## jobs, a 60 s overload, 1,000+ fuzzed requests, a 1,000,000-image soak); about an hour on 2 cores
test-full: install-dev lint typecheck
	bash scripts/install_deploy_tools.sh
	bash scripts/install_browser.sh
	bash scripts/install_redis.sh
	$(PY) -m pytest -m ""

## make audit: pip-audit against requirements.lock (exit 3 when it cannot reach its vulnerability data)
audit: install-dev
	bash scripts/audit_dependencies.sh
