# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use and install the SDK with torch pinned to the CPU wheel (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
# Parallel test workers: one per core, capped at 2 (CI has 2 cores).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && n=2; echo $$n)

.PHONY: setup demo test test-slow test-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $@

demo: setup
	$(PY) -m trainsdk.demo

test: setup
	$(PY) -m pytest -q -n $(WORKERS) -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest -q -n $(WORKERS) -p no:cacheprovider -m slow

test-all: setup
	$(PY) -m pytest -q -n $(WORKERS) -p no:cacheprovider -m 'slow or not slow'

clean:
	rm -rf $(VENV) runs build *.egg-info
