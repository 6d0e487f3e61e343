# Stand-in for flwr/superlink:${FLWR_VERSION}: the same pinned flwr, entry point and user (app, uid 49999).
# Differences from the official image: its base (the kit's Python stand-in, Debian's python3) and that it
# holds only flwr and its dependencies.
ARG PYTHON_IMAGE=local/python:3.11-standin
FROM ${PYTHON_IMAGE}
ARG FLWR_VERSION=1.42.0
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "flwr==${FLWR_VERSION}" && useradd --uid 49999 --create-home app
USER app
WORKDIR /app
ENTRYPOINT ["flower-superlink"]
