"""The recipe package imports only edgecompress.errors and third-party libraries."""

import ast
from pathlib import Path

import edgecompress.recipe

PACKAGE = Path(edgecompress.recipe.__file__).parent


def test_recipe_imports_nothing_internal_but_errors():
    for source in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module == "errors", f"{source.name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] != "edgecompress" or node.module == "edgecompress.errors", (
                    f"{source.name} imports {node.module}")
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "edgecompress" for a in node.names), source.name
