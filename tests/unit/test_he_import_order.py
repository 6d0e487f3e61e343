"""TenSEAL after TensorFlow crashes on serialize: the kit refuses with a message instead."""

import subprocess
import sys


def test_tenseal_after_tensorflow_is_refused_with_a_message():
    code = ("import sys, types; sys.modules['tensorflow'] = types.ModuleType('tensorflow')\n"
            "from edge.private.he import import_tenseal, TenSEALImportOrderError\n"
            "try:\n    import_tenseal()\nexcept TenSEALImportOrderError as e:\n    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "refused: tensorflow is already imported" in done.stdout


def test_tenseal_first_is_allowed():
    code = "from edge.private.he import import_tenseal; print(import_tenseal().__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "tenseal", done.stderr
