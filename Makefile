# Quick start: `make demo` runs the server on the embedded simulated lab; `make test` runs the suite.
# Any Python >= 3.11: the first of these that is one (PY=... overrides).
PY ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Xen Orchestra's web UI (built xo-web): `make demo` serves it at / when it is there.
XO_WEB ?= ../shared/xo-web/dist

.PHONY: test demo sim bench lint clean

$(BIN)/python:
	@test -n "$(PY)" || { echo "need Python 3.11 or newer: install it, or give it as PY=/path/to/python3"; exit 1; }
	@$(PY) -c 'import sys' 2>/dev/null || { echo "$(PY) does not run (not installed, or a pyenv shim of a version not enabled): give PY=/path/to/python3"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$(PY) is older than 3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check server api xen client tests bench
	$(BIN)/ruff format --check server api xen client tests bench
	$(BIN)/mypy --ignore-missing-imports --python-version 3.11 server api xen client bench

# The suite waits on sockets and timers more than it computes: three workers on two cores
# take it from ~10 to ~4 minutes. TEST_JOBS=0 runs it in this process (one at a time).
TEST_JOBS ?= 3

test: lint
	$(BIN)/pytest -q -p no:cacheprovider $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS))

demo: $(STAMP)
	$(BIN)/xo-migrate serve $(if $(wildcard $(XO_WEB)/index.html),--mount /=$(XO_WEB))

sim: $(STAMP)
	$(BIN)/xo-migrate sim

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
