"""The package's floors import only downward (core -> functional -> io -> sources -> method
packages -> pipelines -> metrics -> detectors -> integrations -> cli)."""

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
