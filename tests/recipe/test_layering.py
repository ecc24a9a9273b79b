"""The recipe package imports only edgecompress.errors, edgecompress.devices (device profiles, which import
nothing internal but errors) and third-party libraries."""

import ast
from pathlib import Path

import edgecompress.recipe

PACKAGE = Path(edgecompress.recipe.__file__).parent
ALLOWED = ("edgecompress.errors", "edgecompress.devices")


def test_recipe_imports_nothing_internal_but_errors_and_devices():
    for source in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module in ("errors", "devices"), f"{source.name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "edgecompress" or node.module in ALLOWED, (
                    f"{source.name} imports {node.module}")
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "edgecompress" for a in node.names), source.name
