"""The packages of leadctl import downwards only, and no two of them import each other.

A package (a folder under leadctl/, or a module directly under it) may import one of a lower layer, or
one of its own layer when that makes no loop. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import leadctl

ROOT = Path(leadctl.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "errors", "records", "masking"),
    ("store",),
    ("connections", "retry"),
    ("queue",),
    ("providers", "compliance"),
    ("send", "ingest"),
    ("ops", "webhooks"),
    ("commands", "local", "bench"),
    ("cli",),
    ("__main__", "__init__"),
)
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def _part(module: str) -> str:
    """The first component under leadctl of a dotted module name ('leadctl.send.worker' -> 'send')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> Iterator[tuple[str, str, str]]:
    """(importing part, imported part, where) for every import of leadctl by leadctl."""
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        part = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = (
                    [node.module] if node.module != "leadctl" else [f"leadctl.{a.name}" for a in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("leadctl.") and name != "leadctl.__version__":
                    yield part, _part(name), f"{relative}:{node.lineno}"


def test_every_package_has_a_layer() -> None:
    parts = {
        p.name.removesuffix(".py")
        for p in ROOT.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert parts == set(RANK)


def test_packages_import_downwards_only() -> None:
    upward = [
        f"{where}: {importer} imports {imported}"
        for importer, imported, where in _imports()
        if importer != imported and RANK[imported] > RANK[importer]
    ]
    assert upward == []


def test_no_two_packages_import_each_other() -> None:
    edges: dict[str, set[str]] = {}
    for importer, imported, _ in _imports():
        if importer != imported:
            edges.setdefault(importer, set()).add(imported)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    loops = sorted(a for a in edges if reaches(a, a, {a}))
    assert loops == []
