"""The library's layout: no import circles, and no module over 400 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nfbook"
MODULES = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def imports(path: Path) -> set[str]:
    """The nfbook modules ``path`` imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "nfbook":
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nfbook."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("nfbook.")}
    return found - {path.stem}


def test_no_module_imports_itself_through_others():
    graph = {name: imports(path) for name, path in MODULES.items()}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        for other in graph.get(name, ()):
            if other in trail:
                circles.append(" -> ".join([*trail[trail.index(other):], other]))
            else:
                visit(other, [*trail, other])

    for name in graph:
        visit(name, [name])
    assert not circles, sorted(set(circles))


def test_no_module_is_over_400_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(lengths.values()) <= 400, {n: k for n, k in lengths.items() if k > 400}
