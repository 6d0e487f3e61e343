"""The device side stands alone: edge never imports cloud."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a Python file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_edge_module_imports_cloud():
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "edge").rglob("*.py"))
                 if "cloud" in imported_modules(p)]
    assert offenders == []


def test_every_edge_module_imports_with_cloud_hidden():
    # Prepare: a Python where `import cloud` fails, then import every edge module.
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in sorted((ROOT / "edge").rglob("*.py"))]
    code = ("import sys; sys.modules['cloud'] = None\n"
            + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'cloud' and v))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
