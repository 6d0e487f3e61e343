"""The edge package installs alone on a Raspberry Pi: importing it must not pull torch or tensorflow."""

from __future__ import annotations

import subprocess
import sys


def test_edge_imports_neither_torch_nor_tensorflow():
    # Prepare: a fresh interpreter, so nothing another test imported counts; every module of edge/
    code = (
        "import importlib, pkgutil, sys, edge; "
        "[importlib.import_module('edge.' + m.name) for m in pkgutil.iter_modules(edge.__path__)]; "
        "heavy = sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    # Execute
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Assert
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"edge imported heavy frameworks: {done.stdout.strip()}"


def test_running_a_bundle_does_not_import_them_either(edge_artifacts):
    code = (
        "import sys; from edge.serving.bundle import load_bundle; from edge.serving.keys import load_public_key; "
        "from edge.serving.runners import open_runner; import numpy as np; "
        f"key = load_public_key({str(edge_artifacts['public_key'])!r}); "
        f"paths = {[str(p) for p in edge_artifacts['bundles'].values()]!r}; "
        "[open_runner(load_bundle(p, key)).predict(np.zeros((2, 64), np.float32)) for p in paths]; "
        "print(','.join(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
