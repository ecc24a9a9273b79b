"""Imports run one way: errors/devices ← techniques ← measure/export ← pipeline ← cli (STYLE.md)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "edgecompress"

# package (or module) → internal packages it must never import
FORBIDDEN = {
    "errors": {"*"},
    # device profiles are data at the bottom of the stack: errors is the only internal import
    "devices": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets",
                "training", "layers", "fileio", "distillation", "lowrank", "clustering", "security", "model_io"},
    "fileio": {"*"},
    "progress": {"*"},
    "layers": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets"},
    "recipe": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "models", "datasets", "training"},
    "datasets": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models"},
    "training": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models"},
    "models": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe"},
    "quantization": {"pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets"},
    "pruning": {"quantization", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets"},
    # students of the reference families are built from their classes, so models is allowed here
    "distillation": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "datasets"},
    "lowrank": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets",
                "training"},
    "clustering": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "datasets"},
    # NAS searches on a Dataset and trains the derived network with the one training loop
    "nas": {"quantization", "pruning", "measure", "export", "pipeline", "cli", "recipe", "models", "distillation",
            "lowrank", "clustering", "security", "model_io"},
    "measure": {"quantization", "pruning", "export", "pipeline", "cli", "recipe", "models"},
    "export": {"pruning", "pipeline", "cli", "recipe", "models", "datasets", "training"},
    "pipeline": {"cli"},
}


def _internal_imports(path: Path) -> set[str]:
    package_parts = path.relative_to(SRC).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(package_parts[: len(package_parts) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("edgecompress."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("edgecompress."))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_run_one_way(layer):
    paths = sorted((SRC / layer).rglob("*.py")) if (SRC / layer).is_dir() else [SRC / f"{layer}.py"]
    assert paths and all(p.exists() for p in paths)
    for path in paths:
        imported = _internal_imports(path) - {layer}
        forbidden = FORBIDDEN[layer]
        bad = imported if "*" in forbidden else imported & forbidden
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
