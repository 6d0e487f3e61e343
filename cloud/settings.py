"""Typed settings for the cloud side, read from the environment (and a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.wire.kafka import DEFAULT_BOOTSTRAP_SERVERS

KIT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: labs/, compose/, versions.env


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` (the port is required) into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class StackSettings(BaseSettings):
    """Where the stack's services listen and where runs are written.

    Every endpoint is an environment variable, so the same code reaches local
    processes, compose services or real infrastructure.
    """
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    kafka_bootstrap_servers: str = Field(DEFAULT_BOOTSTRAP_SERVERS, description="KAFKA_BOOTSTRAP_SERVERS")
    kafka_advertised_host: str = Field(
        "", description="KAFKA_ADVERTISED_HOST: address clients are told to dial (LAN IP for a Pi)"
    )
    # Flower 1.42 serves the Fleet, Control and Runtime APIs over HTTP on one port.
    superlink_address: str = Field("127.0.0.1:8000", description="SUPERLINK_ADDRESS")
    runtime: Literal["auto", "local", "docker", "external"] = Field(
        "auto", description="RUNTIME: external = services already run at the endpoints below"
    )
    runs_dir: Path = Field(Path("runs"), description="RUNS_DIR")
    artifacts_dir: Path = Field(
        Path("artifacts"), description="ARTIFACTS_DIR: trained models and bundles shared by labs"
    )
    stack_dir: Path = Field(Path("runs/stack"), description="STACK_DIR: logs and state of `cloud up`")
    health_timeout_s: float = Field(30.0, description="HEALTH_TIMEOUT_S")
    superlink_tls: bool | None = Field(
        None,
        description="SUPERLINK_TLS: 1 = TLS with the certificates in CERTS_DIR, 0 = plain HTTP; "
        "unset = TLS when CERTS_DIR holds them (`make certs`)",
    )
    certs_dir: Path = Field(Path("certs"), description="CERTS_DIR: ca.pem, server.pem, server.key (`make certs`)")
    processor_store: Path = Field(
        Path("runs/stream/processed.db"),
        description="PROCESSOR_STORE: the stream processors' shared SQLite store of processed events",
    )
    processor_kafka_client: str = Field(
        "kafka-python",
        description="PROCESSOR_KAFKA_CLIENT: kafka-python or confluent (cloud.streaming.clients), "
        "for the processor and the drift responder",
    )

    compose_overlays: str = Field(
        "", description="COMPOSE_OVERLAYS: more compose files for RUNTIME=docker, separated by ':' "
        "(after docker-compose.yml; a site's own overrides, or the container tests' stand-ins)",
    )

    def superlink(self) -> tuple[str, int]:
        """The SuperLink as (host, port)."""
        return split_host_port(self.superlink_address)

    def kafka_address(self) -> tuple[str, int]:
        """The first bootstrap server as (host, port)."""
        return split_host_port(self.kafka_bootstrap_servers.split(",")[0])


def load_settings(**overrides) -> StackSettings:
    """Read settings from the environment, with keyword overrides for tests."""
    return StackSettings(**overrides)
