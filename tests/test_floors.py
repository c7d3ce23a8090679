"""The package's floors import only downward (core -> functional -> io -> sources -> method
packages -> pipelines -> metrics -> detectors -> integrations -> cli), and no module imports
itself back through others (no import circles, inside a floor either)."""

import ast
from pathlib import Path

import defectforge

#: Lowest floor first; a module may import its own floor and the floors below it.
FLOORS = ["core", "functional", "io", "sources", "synthesizers", "features", "realdefect", "generative",
          "pipelines", "metrics", "detectors", "integrations", "ui", "cli"]
#: Method packages sit side by side on one floor: none imports another.
SAME_FLOOR = {"synthesizers", "features", "realdefect", "generative"}
#: The one exception: gan_transplant places a GAN's defects with realdefect's transplant blending.
SIDEWAYS_ALLOWED = {("generative", "realdefect")}


def _upward_imports():
    root = Path(defectforge.__file__).parent
    rank = {name: i for i, name in enumerate(FLOORS)}
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) == 1 or parts[0] not in rank:
            continue
        here = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                package = list(parts[:-1])[: len(parts) - node.level]
                target = package + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("defectforge."):
                target = node.module.split(".")[1:]
            else:
                continue
            if not target or target[0] not in rank or target[0] == here:
                continue
            up = rank[target[0]] > rank[here]
            sideways = here in SAME_FLOOR and target[0] in SAME_FLOOR and (here, target[0]) not in SIDEWAYS_ALLOWED
            if up or sideways:
                found.append(f"{path.relative_to(root)}:{node.lineno} imports {'.'.join(target)}")
    return found


def test_floors_import_only_downward():
    assert _upward_imports() == []


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` over the package, imports inside functions included.

    ``from package import name`` points at ``package.name`` where that is a module, else at the
    package; a package's own ``__init__`` running first is not counted (every module has that).
    """
    root = Path(defectforge.__file__).parent
    paths = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + (node.module.split(".") if node.module else []))
                else:
                    base = node.module or ""
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan's algorithm)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    # a module that needs another's name at call time imports it lazily; the circle is still one
    assert _circles(_import_graph()) == []


#: The run engine's modules each do one job; a file past this many lines is doing two (issue 21).
PIPELINES_MAX_LINES = 300


def test_pipelines_files_stay_small():
    root = Path(defectforge.__file__).parent / "pipelines"
    long = {p.relative_to(root).as_posix(): n for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > PIPELINES_MAX_LINES}
    assert long == {}, f"split by job: files over {PIPELINES_MAX_LINES} lines in pipelines/: {long}"
