# nfbook: build the book and run every check.
#
#   make book    build the book, every notebook executed, into _build/html
#   make test    ruff, unit tests + doctests, nbval over every notebook, the book built from the
#                notebooks nbval executed (none runs twice), page checks, and the Colab leg
#
# Both create .venv on first use (PYTHON=python3.11 make ... picks the interpreter) and reinstall
# it when requirements.txt or pyproject.toml change. Other targets: lint, unit, nbval,
# book-executed, pages, colab, screenshots, clean, distclean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
HTML := _build/html
EXECUTED := _build/executed
PYTEST := $(BIN)/python -m pytest -rs

# The Colab leg: Python 3.13 with Colab's own TensorFlow stack (requirements-colab.txt). A
# python3.13 on PATH is used if it runs, else pyenv's newest 3.13.
COLAB_VENV := .venv-colab
COLAB_BIN := $(CURDIR)/$(COLAB_VENV)/bin
COLAB_STAMP := $(COLAB_VENV)/.installed
COLAB_PYTHON ?= $(shell python3.13 -c 'import sys' >/dev/null 2>&1 && echo python3.13 || \
  ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1)

export TF_CPP_MIN_LOG_LEVEL := 2
# Silence ipykernel's "frozen modules" debugger warning in every kernel.
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Tools and notebook kernels find the virtualenv's interpreter first.
export PATH := $(BIN):$(PATH)

.PHONY: help venv book book-executed test lint unit nbval pages colab chromium screenshots clean distclean

help:
	@echo "make book       build the book (every notebook executed) into $(HTML)"
	@echo "make test       ruff, unit tests + doctests, nbval, book build, rendered-page checks, colab"
	@echo "make colab      Colab's set (Python 3.13, TF 2.20): install cell, doctests, Keras tests, chapters 1 and 5"
	@echo "make lint       ruff only"
	@echo "make screenshots  PNG of every chapter page into _build/screenshots (needs chromium)"
	@echo "make clean      remove _build and caches (keeps .venv); make distclean also removes .venv"

# ---------------------------------------------------------------------------------------------
# Virtual environment: created once, reinstalled when requirements.txt or pyproject.toml change.
venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' || { \
	  echo "error: nfbook needs Python 3.10 to 3.13; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." >&2; \
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
	@echo "==> [1/6] ruff check"
	$(BIN)/ruff check .
	@echo "==> [2/6] library unit tests and doctests"
	$(MAKE) --no-print-directory unit
	@echo "==> [3/6] nbval: execute every notebook, failing asserts and exceptions fail"
	$(MAKE) --no-print-directory nbval
	@echo "==> [4/6] build the book from the notebooks nbval executed"
	$(MAKE) --no-print-directory book-executed
	@echo "==> [5/6] rendered-page checks"
	$(MAKE) --no-print-directory pages
	@echo "==> [6/6] Colab's set: Python 3.13, TensorFlow 2.20.0, tf_keras 2.20.1, TFP 0.25.0"
	$(MAKE) --no-print-directory colab

lint: venv
	$(BIN)/ruff check .

# The unit tests run in parallel processes (pytest-xdist): 1.9x sooner on 2 cores (62 s against
# 119 s for tests/test_conditional.py and tests/test_bijectors.py, measured one after the other).
unit: venv
	$(PYTEST) -n auto --maxprocesses=4 tests nfbook --doctest-modules --ignore=tests/test_book_pages.py

# tests/conftest.py is loaded as a plugin (-p) so the device header and the NFBOOK_DEVICE check
# run here too (book/ is outside tests/, where pytest looks for it).
# Each notebook is written under $(EXECUTED) with its outputs once all cells passed.
# Notebooks run NBVAL_WORKERS at a time (pytest-xdist, each notebook's cells in order in one
# worker's kernel): on 2 cores two at a time took 510 s against 797 s one at a time. Each
# chapter's seconds then include sharing the cores; NBVAL_WORKERS=0 times the chapters alone.
NBVAL_WORKERS ?= 2
nbval: venv
	rm -rf $(EXECUTED)
	$(PYTEST) -p tests.conftest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 \
	  -n $(NBVAL_WORKERS) --dist loadfile --save-executed=$(EXECUTED) book/

# The book from the notebooks `make nbval` executed: a copy of the sources in $(EXECUTED), with
# those notebooks and execution turned off, built into the same $(HTML) as `make book`.
book-executed: venv
	@test -f $(EXECUTED)/book/01_introduction.ipynb || { \
	  echo "error: no executed notebooks in $(EXECUTED): run make nbval first" >&2; exit 1; }
	cp _config.yml _toc.yml $(EXECUTED)/
	sed -i 's/^  execute_notebooks: force/  execute_notebooks: "off"/' $(EXECUTED)/_config.yml
	grep -q '^  execute_notebooks: "off"' $(EXECUTED)/_config.yml
	cp -r book/*.md book/references.bib book/_static book/images $(EXECUTED)/book/
	mkdir -p $(EXECUTED)/benchmarks && cp -r benchmarks/results $(EXECUTED)/benchmarks/
	rm -rf $(HTML) _build/jupyter_execute
	$(BIN)/jupyter-book build $(EXECUTED) --path-output . --all -W --keep-going

# Needs a built book (make book); fails, not skips, when _build/html is missing.
pages: venv
	$(PYTEST) tests/test_book_pages.py

# ---------------------------------------------------------------------------------------------
# The Colab leg. The chapters' first cell runs as in Colab (nfbook installed from this checkout on
# top of Colab's stack, which pip must keep), then every doctest (each public function runs), the
# tests of what touches Keras and files most (COLAB_TESTS), and chapters 1 and 5. The main leg runs
# every test; the rest would add about seven minutes here for code that is the same on both stacks.
COLAB_TESTS := tests/test_keras_habits.py tests/test_saving.py tests/test_input.py tests/test_checks.py
$(COLAB_STAMP): requirements-colab.txt pyproject.toml
	@test -n "$(COLAB_PYTHON)" || { \
	  echo "error: the Colab leg needs Python 3.13: none found on PATH or under pyenv." >&2; \
	  echo "       Install it (e.g. 'pyenv install 3.13') or set COLAB_PYTHON=/path/to/python3.13." >&2; \
	  exit 1; }
	@test -x $(COLAB_BIN)/python || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_BIN)/python -m pip install --upgrade pip
	$(COLAB_BIN)/python -m pip install -r requirements-colab.txt
	@touch $@

colab: $(COLAB_STAMP)
	$(COLAB_BIN)/python scripts/colab_install_cell.py book/01_introduction.ipynb
	$(COLAB_BIN)/python -m pytest -rs nfbook --doctest-modules $(COLAB_TESTS)
	$(COLAB_BIN)/python -m pytest -rs -p tests.conftest --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=600 book/01_introduction.ipynb book/05_two_moons.ipynb

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
	rm -rf $(VENV) $(COLAB_VENV)
