"""Integration-tier fixtures: the edge bundles lab 04 makes, built once per test session from quick CNNs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def edge_artifacts(tmp_path_factory):
    """Four signed bundles (ONNX/TFLite x fp32/int8), keys, frames and reference logits in a session folder."""
    from cloud.bench.edge import build_edge_artifacts

    # Same folder in every tier's fixture, so the bundles are built once per session.
    return build_edge_artifacts(tmp_path_factory.getbasetemp() / "edge-artifacts", seed=0)
