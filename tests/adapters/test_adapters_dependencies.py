"""The library depends on torch and safetensors only and imports nothing else of the project
(docs/architecture.md): read from the import statements of every module in `lorma_exp/adapters/`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import lorma_exp.adapters

LIBRARY = Path(lorma_exp.adapters.__file__).parent
ALLOWED = {"torch", "safetensors"}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """`(module, relative level)` of every import statement in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_the_library_imports_only_itself_torch_safetensors_and_the_standard_library():
    modules = sorted(LIBRARY.glob("*.py"))
    assert len(modules) >= 8  # every module of the package is read
    outside = [
        f"{path.name}: {'.' * level}{module}"
        for path in modules
        for module, level in imported_modules(path)
        if level > 1
        or (
            level == 0 and module.split(".")[0] not in ALLOWED | set(sys.stdlib_module_names) | {"__future__"}
        )
    ]
    assert outside == []
