"""Unit-tier fixtures: a Flower run identity for building Messages outside a run."""

from __future__ import annotations

import pytest


@pytest.fixture()
def in_a_run(monkeypatch):
    """Flower only builds Messages inside a run: give this process a run and node identity."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
