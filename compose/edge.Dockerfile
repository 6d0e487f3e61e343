# The edge image: devices and SuperNodes. No torch, no tensorflow; builds for arm64 too:
#   docker buildx build --platform linux/arm64 -f compose/edge.Dockerfile .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

WORKDIR /kit
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# Behind a TLS-intercepting proxy: put its CA as compose/ca/*.crt (see compose/ca/README.md).
COPY compose/ca/ /tmp/kit-ca/
RUN for crt in /tmp/kit-ca/*.crt; do [ -f "$crt" ] && cat "$crt" >> /etc/ssl/certs/ca-certificates.crt; done; \
    rm -rf /tmp/kit-ca

# Dependencies first (pinned in pyproject.toml), the device code last: a code change rebuilds one layer.
COPY pyproject.toml README.md versions.env ./
# hadolint ignore=DL3013
RUN mkdir -p edge && touch edge/__init__.py \
    && pip install ".[edge]" && pip uninstall -y edge-cloud-ml-kit && rm -rf edge build ./*.egg-info

COPY edge ./edge
RUN pip install --no-deps -e .

USER 10001
ENTRYPOINT ["edge"]
CMD ["--help"]
