# The two set-up commands: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse the virtual environment in .venv with everything installed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU machine takes the CPU build of torch that lies on this kind of machine; an unpinned
# torch would pull a multi-GB CUDA build. GPU clusters bring torch with their image.
TORCH ?= torch==2.13.0

# The node images (Dockerfile): `make image` builds both targets, `make push-image` pushes them to IMAGE_REPO.
IMAGE_REPO ?= mlray
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TORCH_VERSION := $(patsubst torch==%,%,$(TORCH))

.PHONY: setup demo test test-fast bench image push-image clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/mlray demo --dir mlray-demo

# The README's one-machine cluster block runs `ray start` and `ray stop` (every Ray of the user): on its own, last.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests --ignore=tests/e2e/readme
	README_CLUSTER_WALKTHROUGH=1 $(BIN)/python -m pytest tests/e2e/readme

test-fast: setup
	$(BIN)/python -m pytest tests/unit

bench: setup
	$(BIN)/python benchmarks/run.py

image:
	docker build --target cpu --build-arg TORCH_VERSION=$(TORCH_VERSION) -t $(IMAGE_REPO):$(VERSION)-cpu .
	docker build --target gpu --build-arg TORCH_VERSION=$(TORCH_VERSION) -t $(IMAGE_REPO):$(VERSION)-gpu .

push-image: image
	docker push $(IMAGE_REPO):$(VERSION)-cpu
	docker push $(IMAGE_REPO):$(VERSION)-gpu

clean:
	rm -rf $(VENV) mlray-demo .pytest_cache
