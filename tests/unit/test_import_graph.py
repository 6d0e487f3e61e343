"""The kit's import graph, read from the source with ast: no circles, edge never imports cloud, each room says what it holds."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "cloud")


def module_name(path: Path) -> str:
    """cloud/stack/local.py -> cloud.stack.local; cloud/stack/__init__.py -> cloud.stack."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_modules() -> dict[str, Path]:
    """Every module of the kit's two packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The kit modules a file imports, at the top or inside a function (a hidden import is still an arrow)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from cloud.stack import procs` imports the module cloud.stack.procs.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the kit modules it imports (a package's own __init__ is not an arrow)."""
    modules = kit_modules()
    graph = {}
    for name, path in modules.items():
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = imported_modules(path, modules) - {name} - parents
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert len(graph) > 60
    assert "cloud.stack.procs" in graph["cloud.stack.local"]
    assert sum(len(targets) for targets in graph.values()) > 100


def test_the_kit_has_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_edge_never_imports_cloud():
    offenders = {m: sorted(t for t in targets if t.startswith("cloud"))
                 for m, targets in import_graph().items() if m.startswith("edge")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_every_folder_says_what_lives_there_in_one_line():
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and len(doc.splitlines()) == 1, f"{init.relative_to(ROOT)} needs a one-line docstring"


def room_of(module: str) -> str:
    """cloud.stack.local -> cloud.stack; top-level modules (cloud.cli, edge.machine) are their own room."""
    return ".".join(module.split(".")[:2])


def allowed_rooms(doc: str, rooms: set[str]) -> set[str] | None:
    """The rooms a folder's docstring says it may import ('May import cloud.ml and edge.'); None means any."""
    if "May import everything" in doc:
        return None
    if "Imports nothing else of the kit" in doc:
        return set()
    named = doc.split("May import", 1)[1] if "May import" in doc else ""
    words = {w.strip(",.;") for w in named.replace(" and ", " ").split()}
    return {r for r in rooms if r in words or r.split(".")[0] in words}


def test_each_folder_imports_only_what_its_docstring_allows():
    graph = import_graph()
    rooms = {room_of(m) for m in graph}
    problems = []
    for init in sorted((ROOT / p / sub / "__init__.py") for p in PACKAGES for sub in subpackages(ROOT / p)):
        room = module_name(init)
        allowed = allowed_rooms(ast.get_docstring(ast.parse(init.read_text())), rooms)
        if allowed is None:
            continue
        allowed |= {room, "edge.log"} | ({"cloud.settings"} if room.startswith("cloud") else set())  # used everywhere
        for module, targets in graph.items():
            if room_of(module) == room:
                problems += [f"{module} imports {t}" for t in sorted(targets) if room_of(t) not in allowed]
    assert problems == []


def subpackages(folder: Path) -> list[str]:
    """Subfolders of a package that are packages themselves."""
    return sorted(p.name for p in folder.iterdir() if (p / "__init__.py").exists())
