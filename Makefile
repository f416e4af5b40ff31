# nfbook: build the book and run every check.
#
#   make book    build the book, every notebook executed, into _build/html
#   make test    ruff, unit tests + doctests, nbval over every notebook, book build, page checks
#
# Both create .venv on first use (PYTHON=python3.11 make ... picks the interpreter) and reinstall
# it when requirements.txt or pyproject.toml change. Other targets: lint, unit, nbval, pages,
# screenshots, clean, distclean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
HTML := _build/html
PYTEST := $(BIN)/python -m pytest -rs

export TF_CPP_MIN_LOG_LEVEL := 2
# Silence ipykernel's "frozen modules" debugger warning in every kernel.
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Tools and notebook kernels find the virtualenv's interpreter first.
export PATH := $(BIN):$(PATH)

.PHONY: help venv book test lint unit nbval pages chromium screenshots clean distclean

help:
	@echo "make book       build the book (every notebook executed) into $(HTML)"
	@echo "make test       ruff, unit tests + doctests, nbval, book build, rendered-page checks"
	@echo "make lint       ruff only"
	@echo "make screenshots  PNG of every chapter page into _build/screenshots (needs chromium)"
	@echo "make clean      remove _build and caches (keeps .venv); make distclean also removes .venv"

# ---------------------------------------------------------------------------------------------
# Virtual environment: created once, reinstalled when requirements.txt or pyproject.toml change.
venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' || { \
	  echo "error: nfbook needs Python 3.10 to 3.12; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
	  echo "       Run e.g. 'make $(MAKECMDGOALS) PYTHON=python3.11' (after 'make distclean')." >&2; \
	  exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv." >&2; exit 1; }
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install -e .
	@touch $@

# ---------------------------------------------------------------------------------------------
# The book. --all rebuilds (and so re-executes) every page: an incremental Sphinx build would skip
# unchanged notebooks and could pass on warnings it no longer reports. -W turns warnings, among
# them "notebook execution failed", into a non-zero exit; --keep-going reports them all first.
book: venv
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo "Book built: open $(CURDIR)/$(HTML)/index.html"

# ---------------------------------------------------------------------------------------------
# Tests. Each step is one recipe line, so make stops at the first failing step and exits
# non-zero; pytest's exit code 5 ("no tests collected") also fails the step.
test: venv chromium
	@echo "==> [1/5] ruff check"
	$(BIN)/ruff check .
	@echo "==> [2/5] library unit tests and doctests"
	$(PYTEST) tests nfbook --doctest-modules --ignore=tests/test_book_pages.py
	@echo "==> [3/5] nbval: execute every notebook, failing asserts and exceptions fail"
	$(MAKE) --no-print-directory nbval
	@echo "==> [4/5] build the book"
	$(MAKE) --no-print-directory book
	@echo "==> [5/5] rendered-page checks"
	$(MAKE) --no-print-directory pages

lint: venv
	$(BIN)/ruff check .

unit: venv
	$(PYTEST) tests nfbook --doctest-modules --ignore=tests/test_book_pages.py

# tests/conftest.py is loaded as a plugin (-p) so the device header and the NFBOOK_DEVICE check
# run here too (book/ is outside tests/, where pytest looks for it).
nbval: venv
	$(PYTEST) -p tests.conftest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 book/

# Needs a built book (make book); fails, not skips, when _build/html is missing.
pages: venv
	$(PYTEST) tests/test_book_pages.py

# ---------------------------------------------------------------------------------------------
# Headless Chromium for the screenshot test: installed with apt-get when running as root.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	    || command -v google-chrome >/dev/null || [ -n "$${CHROMIUM:-}" ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "==> installing chromium (apt-get)"; \
	  apt-get update && apt-get install -y --no-install-recommends chromium; \
	else \
	  echo "warning: no chromium found; the screenshot tests will FAIL." >&2; \
	  echo "         Install it with 'sudo apt-get install chromium' (Debian), set CHROMIUM=/path/to/chrome," >&2; \
	  echo "         or skip them explicitly with NFBOOK_SKIP_BROWSER=1." >&2; \
	fi

screenshots: venv chromium
	@test -d $(HTML) || { echo "error: $(HTML) is missing: run make book first" >&2; exit 1; }
	$(BIN)/python scripts/screenshot_pages.py --html $(HTML) --out _build/screenshots

# ---------------------------------------------------------------------------------------------
clean:
	rm -rf _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) \
	  -type d -print0 | xargs -0 rm -rf
	rm -rf *.egg-info

distclean: clean
	rm -rf $(VENV)
