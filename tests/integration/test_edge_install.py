"""`pip install .[edge]` into a fresh venv: the device side pulls neither torch nor tensorflow."""

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"torch", "tensorflow", "tensorflow-cpu", "keras", "opacus", "river", "tenseal"}


def test_edge_extra_installs_without_torch_or_tensorflow(tmp_path):
    # Prepare: a copy of the sources (so no build files land in the checkout) and a fresh venv.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", "runs", "artifacts", ".git", "__pycache__", "*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"

    # Execute
    done = subprocess.run([str(pip), "install", "--disable-pip-version-check", "-q",
                           f"{source}[edge]"], capture_output=True, text=True)
    listing = subprocess.run([str(pip), "list", "--format", "json"], capture_output=True,
                             text=True, check=True)

    # Assert: the edge extra's runtimes are there, the heavy frameworks are not.
    assert done.returncode == 0, done.stderr[-3000:]
    installed = {d["name"].lower() for d in json.loads(listing.stdout)}
    assert {"onnxruntime", "ai-edge-litert", "kafka-python", "flwr"} <= installed
    assert installed & FORBIDDEN == set()
    assert importlib.metadata.version("flwr") in {d["version"] for d in json.loads(listing.stdout)
                                                  if d["name"].lower() == "flwr"}
