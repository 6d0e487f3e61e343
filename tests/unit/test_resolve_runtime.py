"""RUNTIME=auto picks compose only where both an engine and Compose v2 answer; RUNTIME=docker says what is missing."""

import pytest

from cloud.stack import local


@pytest.mark.parametrize(("engine", "compose", "expected"),
                         [(False, False, "local"), (True, False, "local"), (True, True, "docker")])
def test_auto_uses_docker_only_with_an_engine_and_compose_v2(monkeypatch, engine, compose, expected):
    monkeypatch.setattr(local, "docker_engine_available", lambda: engine)
    monkeypatch.setattr(local, "compose_v2_available", lambda: compose)
    assert local.resolve_runtime("auto") == expected


def test_docker_without_compose_v2_names_what_to_install(monkeypatch):
    monkeypatch.setattr(local, "docker_engine_available", lambda: True)
    monkeypatch.setattr(local, "compose_v2_available", lambda: False)
    with pytest.raises(RuntimeError, match="Compose v2 is missing.*RUNTIME=local"):
        local.resolve_runtime("docker")
