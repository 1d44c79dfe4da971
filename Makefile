# The two set-up commands: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse the virtual environment in .venv with everything installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU machine takes the CPU build of torch that lies on this kind of machine; an unpinned
# torch would pull a multi-GB CUDA build. GPU clusters bring torch with their image.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/mlray demo --dir mlray-demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests

test-fast: setup
	$(BIN)/python -m pytest tests/unit

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) mlray-demo .pytest_cache
