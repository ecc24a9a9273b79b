import ast
from pathlib import Path

import edgecompress.measure
from edgecompress.measure import cpu_summary, environment
from edgecompress.measure.environment import RELEVANT_FLAGS

MEASURE = Path(edgecompress.measure.__file__).parent
FORBIDDEN = ("export", "pipeline", "cli", "quantization", "pruning")


def test_environment_fields():
    env = environment()
    assert env["cpu"] and env["cpu_count"] >= 1 and env["python"].count(".") == 2
    assert env["torch"] and env["numpy"] and env["edgecompress"]
    assert all(f in RELEVANT_FLAGS or f.startswith("amx_") for f in env["cpu_flags"])
    line = cpu_summary(env)
    assert "\n" not in line and env["cpu"] in line and f"torch {env['torch']}" in line


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_measure_is_pure():
    for path in MEASURE.glob("*.py"):
        for name in _imports(path):
            parts = name.lstrip(".").split(".")
            internal = name.startswith("..") or parts[0] == "edgecompress"
            target = parts[1] if parts[0] == "edgecompress" and len(parts) > 1 else parts[0]
            assert not (internal and target in FORBIDDEN), f"{path.name} imports {name}"


def test_probe_needs_only_the_standard_library_numpy_and_the_runtime():
    imported = _imports(MEASURE / "probe.py")
    assert not any(n.startswith(".") or n.startswith("edgecompress") for n in imported)
    assert "torch" in imported and "onnxruntime" in imported  # inside the function of each runtime
