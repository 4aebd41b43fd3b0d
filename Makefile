# The two README commands: `make demo` and `make test`. Each sets up what it needs first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VENV_DEBIAN := .venv-debian
VENV_DEMO := .venv-demo
PYTEST_ARGS ?=

UPSTREAM_BIN := .upstream/bin

.PHONY: demo test check lint typecheck format system-deps upstream e2e bench clean deb docs

# Newest releases from PyPI.
$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $@

# Debian bookworm's python3 and python3-* packages (the oldest versions we support).
$(VENV_DEBIAN)/.stamp: pyproject.toml scripts/system-deps
	bash scripts/system-deps
	/usr/bin/python3 -m venv --system-site-packages $(VENV_DEBIAN)
	$(VENV_DEBIAN)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

system-deps:
	bash scripts/system-deps

# The pinned upstream components (Kubernetes, etcd, CoreDNS, containerd, ...), built from their
# Go modules; cached under ~/.cache/nodehosts/upstream, so only the first run builds.
upstream:
	scripts/upstream-bin $(UPSTREAM_BIN)

# `make demo` needs only the runtime dependencies, not the test and lint extras, and no
# editable install (setuptools warns about those): a plain install in a venv of its own.
$(VENV_DEMO)/.stamp: pyproject.toml $(shell find nodehosts -name "*.py")
	@$(PY) -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make demo: needs Python >= 3.11 with venv (PY=$(PY) is $$($(PY) --version 2>&1)); try PY=python3.11" >&2; exit 1; }
	$(PY) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/pip install -q --upgrade pip
	$(VENV_DEMO)/bin/pip install -q .
	touch $@

demo: $(VENV_DEMO)/.stamp
	$(VENV_DEMO)/bin/nodehosts demo

# The Debian package in dist/, built by Debian's python3 and tools whatever python is first
# on PATH (pyenv, a venv); then: apt install ./dist/nodehosts_*_all.deb (README).
deb:
	scripts/build-deb dist

# What the package ships, generated from the CLI's parser (tests/test_docs.py checks them):
# the man page, and bash and zsh completion (shtab, from the dev extras).
docs: $(VENV)/.stamp
	$(VENV)/bin/python docs/mkman.py -o docs/nodehosts.1
	$(VENV)/bin/python -m shtab --error-unimportable --shell=bash nodehosts.cli.make_parser \
	  >docs/completion/nodehosts.bash
	$(VENV)/bin/python -m shtab --error-unimportable --shell=zsh nodehosts.cli.make_parser \
	  >docs/completion/_nodehosts

# ruff, then mypy (config in pyproject.toml: strict on nodehosts/core, normal elsewhere).
lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check nodehosts tests bench
	$(VENV)/bin/ruff format --check nodehosts tests bench
	$(VENV)/bin/mypy

typecheck: $(VENV)/.stamp
	$(VENV)/bin/mypy

format: $(VENV)/.stamp
	$(VENV)/bin/ruff format nodehosts tests bench
	$(VENV)/bin/ruff check --fix nodehosts tests bench

# Everything but the booted-container tests, against both dependency sets.
check: $(VENV)/.stamp $(VENV_DEBIAN)/.stamp lint upstream
	$(VENV)/bin/python -m pytest -q -m 'not e2e' $(PYTEST_ARGS)
	$(VENV_DEBIAN)/bin/python -m pytest -q -m 'not e2e and not provisioning' $(PYTEST_ARGS)

# The full suite: check, then the Debian package in booted bookworm and trixie containers.
test: check
	$(VENV)/bin/python -m pytest -q -m e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(VENV_DEBIAN) $(VENV_DEMO) .upstream build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
