"""Test tiers: a test's folder (unit/, integration/, labs/) gives its marker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The suite runs TensorFlow and TenSEAL in one process: TenSEAL must be imported first, or its
# serialize() segfaults (see edge.private.he.import_tenseal). Labs run in their own processes.
try:
    import tenseal  # noqa: F401
except ImportError:  # the edge-only install has no tenseal
    pass

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "labs")


def pytest_collection_modifyitems(config, items):
    """Mark each test with the tier named by its folder; the kit's own doctests are unit tests."""
    for item in items:
        path = Path(str(item.fspath))
        if not path.is_relative_to(ROOT / "tests"):
            item.add_marker(pytest.mark.unit)  # a ``>>>`` example in edge/ or cloud/
            continue
        parts = path.relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def edge_artifacts(tmp_path_factory):
    """Lab 04's four signed bundles (ONNX/TFLite x fp32/int8), keys, frames and reference logits, built once."""
    from cloud.ml.edge_artifacts import build_edge_artifacts

    return build_edge_artifacts(tmp_path_factory.getbasetemp() / "edge-artifacts", seed=0)


@pytest.fixture(autouse=True, scope="session")
def _venv_bin_on_path():
    """Flower's SuperLink starts flower-superexec from the venv's bin: keep it on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    yield


@pytest.fixture()
def run_settings(tmp_path, monkeypatch):
    """StackSettings writing runs and artifacts under a temporary folder, on free ports."""
    from cloud.settings import StackSettings
    from cloud.stack.procs import free_port

    return StackSettings(
        runs_dir=tmp_path / "runs",
        stack_dir=tmp_path / "stack",
        artifacts_dir=tmp_path / "artifacts",
        certs_dir=tmp_path / "certs",
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        superlink_address=f"127.0.0.1:{free_port()}",
        runtime="local",
    )
