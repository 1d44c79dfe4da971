# syntax=docker/dockerfile:1
# mlray's node images, one per target (`make image` builds both; `make push-image IMAGE_REPO=<registry>/mlray` pushes):
#   cpu: Ray's Python 3.11 image with the CPU build of torch (a plain `pip install torch` would pull the CUDA build)
#   gpu: Ray's CUDA image with torch's CUDA 12.8 build (its CUDA libraries come with the wheel; the node's NVIDIA
#        driver must be 570 or newer)
# Each has torch installed before mlray, so no node downloads it when it joins, and mlray installed at /app with its
# jobs/ (the KubeRay manifests run /app/jobs/*.py). The versions are checked against pyproject.toml and the Makefile
# by tests/unit/test_images.py.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311

ARG TORCH_VERSION=2.13.0

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG} AS cpu
ARG TORCH_VERSION
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
RUN sudo install -d -o ray -g users /app  # pip builds in the tree: the image's user must own it
WORKDIR /app
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users mlray ./mlray
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir /app && cd / && python -c "import mlray.spec, torch, ray; print(torch.__version__, ray.__version__)"

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu AS gpu
ARG TORCH_VERSION
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
RUN sudo install -d -o ray -g users /app  # pip builds in the tree: the image's user must own it
WORKDIR /app
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users mlray ./mlray
COPY --chown=ray:users jobs ./jobs
RUN pip install --no-cache-dir /app && cd / && python -c "import mlray.spec, torch, ray; print(torch.__version__, ray.__version__)"
