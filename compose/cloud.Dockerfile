# The cloud image: the lab runner, stream processors, the ServerApp's SuperExec, training and export.
# Base image and torch index are build args, so a machine without a registry can use its own base:
#   docker build --build-arg PYTHON_IMAGE=local/python:3.11 -f compose/cloud.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
# The CPU build of torch keeps the image small; compose/gpu.yml reserves GPUs for a CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Or a folder of wheels served over HTTP (the container tier serves the CPU wheel already on the host).
ARG TORCH_FIND_LINKS=""
ARG TORCH_TRUSTED_HOST=""
WORKDIR /kit
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# Behind a TLS-intercepting proxy: put its CA as compose/ca/*.crt (see compose/ca/README.md).
COPY compose/ca/ /tmp/kit-ca/
RUN for crt in /tmp/kit-ca/*.crt; do [ -f "$crt" ] && cat "$crt" >> /etc/ssl/certs/ca-certificates.crt; done; \
    rm -rf /tmp/kit-ca

# Layers from slowest-changing to fastest: dependencies first (pinned in pyproject.toml, the one place),
# the kit's code last, so a code change rebuilds only the last two layers.
COPY pyproject.toml README.md versions.env ./
# hadolint ignore=DL3013
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
       ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} ${TORCH_TRUSTED_HOST:+--trusted-host "$TORCH_TRUSTED_HOST"} \
    && mkdir -p edge cloud && touch edge/__init__.py cloud/__init__.py \
    && pip install ".[cloud]" && pip uninstall -y edge-cloud-ml-kit && rm -rf edge cloud build ./*.egg-info

COPY edge ./edge
COPY cloud ./cloud
COPY labs ./labs
# Editable, so the kit finds labs/ and versions.env beside its code (cloud.settings.KIT_ROOT is /kit).
RUN pip install --no-deps -e . && mkdir -p /kit/runs /kit/artifacts && chmod 1777 /kit/runs /kit/artifacts

# Any user may run it: compose passes the host's uid (KIT_UID) so files in bind mounts stay the user's.
USER 10001
ENTRYPOINT ["cloud"]
CMD ["--help"]
