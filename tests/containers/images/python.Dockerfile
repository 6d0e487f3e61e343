# Stand-in for python:3.11-slim, built from Debian packages (no image registry answers on CI machines).
# Differences from the official image: Debian's python3 3.11.2 in /usr/bin (official: 3.11.x built from
# source in /usr/local/bin), and pip installs scripts to /usr/local/bin, another folder than the interpreter's.
FROM local/debian:bookworm
COPY ca/ /tmp/kit-ca/
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && for crt in /tmp/kit-ca/*.crt; do [ -f "$crt" ] && cat "$crt" >> /etc/ssl/certs/ca-certificates.crt; done; \
    rm -rf /tmp/kit-ca
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
