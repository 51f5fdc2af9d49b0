# Every target works on a fresh machine: the venv is made once (stamp files), and torch is
# pinned to the CPU build on local disk *before* the project, so that pip never resolves
# `torch>=2.3` to a multi-GB CUDA build.
VENV = .venv
PY = $(VENV)/bin/python
PYTHON = python3
TORCH = torch==2.13.0
LINT_PATHS = $(wildcard datapipes tests examples benchmarks conftest.py)

.PHONY: all venv dev test lint typecheck pytest demo bench clean distclean

all: test

venv: $(VENV)/.stamp-base
dev: $(VENV)/.stamp-dev

$(VENV)/.stamp-base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH)
	touch $@

# An editable install made while datapipes/__init__.py did not exist maps `datapipes` as a
# namespace package for good (scripts then import an empty package): reinstall once it appears.
LAYOUT = $(VENV)/.layout-$(if $(wildcard datapipes/__init__.py),package,namespace)
$(LAYOUT): $(VENV)/.stamp-base
	rm -f $(VENV)/.layout-*
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-base $(LAYOUT) pyproject.toml
	$(PY) -m pip install -e ".[dev]"
	touch $@

$(VENV)/.stamp-examples: $(VENV)/.stamp-base $(LAYOUT) pyproject.toml
	$(PY) -m pip install -e ".[examples]"
	touch $@

$(VENV)/.stamp-bench: $(VENV)/.stamp-base $(LAYOUT) pyproject.toml
	$(PY) -m pip install -e ".[bench]"
	touch $@

# Runs every check even when one fails, so a CI log shows all failures; exits non-zero if any.
test: $(VENV)/.stamp-dev
	@status=0; \
	echo "== ruff check $(LINT_PATHS)"; $(PY) -m ruff check $(LINT_PATHS) || status=1; \
	echo "== mypy datapipes"; $(PY) -m mypy datapipes || status=1; \
	echo "== pytest"; $(PY) -m pytest -q || status=1; \
	exit $$status

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check $(LINT_PATHS)

typecheck: $(VENV)/.stamp-dev
	$(PY) -m mypy datapipes

pytest: $(VENV)/.stamp-dev
	$(PY) -m pytest -q

demo: $(VENV)/.stamp-examples
	$(PY) examples/quickstart.py

bench: $(VENV)/.stamp-bench
	@set -e; for f in benchmarks/[!_]*.py; do \
	  [ -e "$$f" ] || { echo "no benchmarks/*.py yet"; break; }; \
	  echo "== $$f"; PYTHONPATH=. $(PY) "$$f"; \
	done

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .hypothesis .pytest_cache benchmarks/out
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
