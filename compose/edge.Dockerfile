# The edge image: devices and SuperNodes. No torch, no tensorflow; builds for arm64 too:
#   docker buildx build --platform linux/arm64 -f compose/edge.Dockerfile .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

WORKDIR /kit
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

COPY pyproject.toml README.md versions.env ./
COPY edge ./edge
# Versions are pinned in pyproject.toml (the one place), so pip installs the project itself.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[edge]" \
    && useradd --uid 10001 --create-home kit

USER 10001
ENTRYPOINT ["edge"]
CMD ["--help"]
