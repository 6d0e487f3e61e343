# The cloud image: stream processors, the lab runner, training and export.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VERSION=2.13.0
# The CPU build of torch keeps the image small; override for a CUDA build with compose/gpu.yml.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /kit
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

COPY pyproject.toml README.md versions.env ./
COPY edge ./edge
COPY cloud ./cloud
COPY labs ./labs
# Versions are pinned in pyproject.toml (the one place), so pip installs the project itself.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install --no-cache-dir ".[cloud]" \
    && useradd --uid 10001 --create-home kit \
    && mkdir -p /kit/runs && chown 10001 /kit/runs

USER 10001
ENTRYPOINT ["cloud"]
CMD ["--help"]
