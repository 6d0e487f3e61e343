"""The device process's settings, read from the environment (and a .env file) with development defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.wire.kafka import DEFAULT_BOOTSTRAP_SERVERS


class DeviceSettings(BaseSettings):
    """Where a streaming device sends its events; every endpoint is an environment variable.

    pydantic-settings is a core dependency (``pyproject.toml``), so a Raspberry Pi with only the
    ``edge`` extra has it; this is the device's twin of ``cloud.settings.StackSettings``, which the
    device cannot import.

    Examples
    --------
    >>> DeviceSettings(kafka_bootstrap_servers="10.0.0.5:9092").kafka_bootstrap_servers
    '10.0.0.5:9092'
    """
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(DEFAULT_BOOTSTRAP_SERVERS, description="KAFKA_BOOTSTRAP_SERVERS")

