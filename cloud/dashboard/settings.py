"""The dashboard's typed settings, read from the environment (and a .env file)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """Where the dashboard listens and how often it looks at the scenario's files.

    It binds to 127.0.0.1 by default: the page shows device ids and metrics of a lab, so
    another host sees it only when ``DASHBOARD_HOST`` (or ``--host``) says so.
    """
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    dashboard_host: str = Field(
        "127.0.0.1", description="DASHBOARD_HOST: the address to bind (localhost only by default)"
    )
    dashboard_port: int = Field(8050, ge=0, le=65535, description="DASHBOARD_PORT")
    dashboard_interval_s: float = Field(
        1.0, gt=0, description="DASHBOARD_INTERVAL_S: how often /events looks for a changed snapshot"
    )
    dashboard_start_timeout_s: float = Field(
        20.0, gt=0, description="DASHBOARD_START_TIMEOUT_S: how long start() waits for /health"
    )


def load_settings(**overrides) -> DashboardSettings:
    """Read settings from the environment, with keyword overrides for tests."""
    return DashboardSettings(**overrides)
