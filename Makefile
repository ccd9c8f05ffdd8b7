# PipeLens — `make help` lists the targets. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install browser run demo test lint typecheck pytest bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,server,openai,anthropic,litellm,google-genai,prices,otlp,fastapi]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install PipeLens with every extra

# The dashboard's browser tests drive Debian's Chromium (a downloaded browser cannot be had here);
# without it they fail rather than skip, so the test target installs it when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

browser: $(CHROMIUM) ## Install Debian's Chromium for the browser tests when it is missing

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: $(CHROMIUM) is missing and there is no apt-get: install Chromium there by hand" >&2; exit 1; }
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends chromium

run: $(STAMP) ## Start the server (embedded PostgreSQL) on :3000 and fill it with demo runs
	$(BIN)/pipelens demo --serve

demo: $(STAMP) ## Run the demo pipeline in-process and print its step tree (no server)
	$(BIN)/python -m pipelens demo

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy (strict) on both packages
	$(BIN)/mypy

pytest: $(STAMP) $(CHROMIUM) ## Only the test suite (pass ARGS=... to pytest)
	$(BIN)/pytest $(ARGS)

test: lint typecheck pytest ## Everything CI runs: lint, types, the whole test suite

bench: $(STAMP) ## Print the overhead and ingest benchmarks' figures
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.ingest

clean: ## Remove .venv and caches
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tests/output
