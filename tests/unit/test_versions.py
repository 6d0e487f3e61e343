"""Versions that must agree: versions.env, pyproject.toml pins and compose defaults."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def read_versions_env() -> dict[str, str]:
    """KEY=VALUE lines of versions.env."""
    from cloud.stack.compose import read_versions

    return read_versions(ROOT / "versions.env")


def pinned(requirements: list[str], name: str) -> set[str]:
    """Versions pinned with == for a package in a list of requirement strings."""
    found = set()
    for requirement in requirements:
        match = re.match(rf"^{re.escape(name)}==([\w.]+)", requirement)
        if match:
            found.add(match.group(1))
    return found


def test_pyproject_pins_match_versions_env():
    versions = read_versions_env()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    assert pinned(extras["edge"], "flwr") == {versions["FLWR_VERSION"]}
    torch_pins = set().union(*(pinned(reqs, "torch") for reqs in extras.values()))
    assert torch_pins == {versions["TORCH_VERSION"]}
    assert project["requires-python"] == f">={versions['PYTHON_VERSION']}"


def test_compose_defaults_match_versions_env():
    versions = read_versions_env()
    compose = (ROOT / "docker-compose.yml").read_text()
    for key in ("FLWR_VERSION", "KAFKA_VERSION", "TORCH_VERSION", "PYTHON_VERSION"):
        defaults = set(re.findall(rf"\$\{{{key}:-([^}}]+)\}}", compose))
        assert defaults == {versions[key]}, f"{key}: compose says {defaults}"
