# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use and install the SDK with torch pinned to the CPU wheel (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
# Parallel test workers: one per core, capped at 2 (CI has 2 cores).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && n=2; echo $$n)

.PHONY: setup demo test test-slow test-all clean cuda-check

# setup also builds the fused C++ ops (cpp_ext/, cached in build/medcnn_ext/): it fails here if they do not build,
# unless MEDCNN_NO_EXT=1 (pure-PyTorch reference ops). The ninja wheel is only installed when ninja is missing.
setup: $(VENV)/.installed
	@command -v ninja >/dev/null || [ -x $(VENV)/bin/ninja ] || $(PIP) ninja
	$(PY) -m trainsdk.ops.build

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

# Compile-check the framework-free CUDA kernels with plain nvcc for sm_80 and sm_90 (no GPU or CUDA torch needed),
# then syntax-check the torch bindings against the venv's torch headers (the CPU wheel lacks one generated CUDA
# header, c10/cuda/impl/cuda_cmake_macros.h, which gets an empty stand-in).
NVCC ?= nvcc
CUDA_SRC := $(wildcard cpp_ext/csrc/cuda/*.cu)
CUDA_INC ?= $(or $(CUDA_HOME),/usr/local/cuda)/include
CUDA_ARCHS := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
cuda-check:
	@set -e; for f in $(CUDA_SRC); do \
		$(NVCC) -std=c++17 $(CUDA_ARCHS) -Werror all-warnings -Xcompiler -Wall,-Wextra -c $$f -o /dev/null; \
		echo "nvcc sm_80+sm_90 ok: $$f"; done 2>&1
	@if [ -x $(PY) ]; then \
		inc=$$($(PY) -c "from torch.utils.cpp_extension import include_paths; print(include_paths()[0])"); \
		stub=$$(mktemp -d); mkdir -p $$stub/c10/cuda/impl; echo '#pragma once' > $$stub/c10/cuda/impl/cuda_cmake_macros.h; \
		$(CXX) -std=c++20 -fsyntax-only -Wall -Wextra -DMEDCNN_WITH_CUDA -I$$stub -isystem $$inc -isystem $(CUDA_INC) \
			cpp_ext/csrc/cuda/bindings.cpp && echo "bindings syntax ok: cpp_ext/csrc/cuda/bindings.cpp"; \
		status=$$?; rm -rf $$stub; exit $$status; fi
