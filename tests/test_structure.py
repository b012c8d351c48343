"""The shape of the package: a kernel that imports no stage, stages that never import another
stage's job, no import cycles, and modules and functions of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "openscene_ray"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every openscene_ray module ``name`` imports, at the top or inside functions."""
    path = MODULES[name]
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _stage(name: str) -> str | None:
    """The stage package of a module (``openscene_ray.fusion.job`` -> ``fusion``); None for the kernel
    and the top-level modules."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] != "kernel" else None


def test_no_import_cycles():
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_kernel_imports_no_stage():
    bad = {
        name: sorted(t for t in targets if not t.startswith("openscene_ray.kernel") and t != "openscene_ray")
        for name, targets in GRAPH.items()
        if name.startswith("openscene_ray.kernel")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_no_stage_imports_another_stages_job():
    bad = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if target.endswith(".job") and _stage(target) != _stage(name)
    ]
    assert not bad


def test_modules_and_functions_stay_readable():
    too_long = []
    for name, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long


@pytest.mark.parametrize("rule, graph, expected", [
    ("cycle", {"a": {"b"}, "b": {"a"}}, True),
    ("cycle", {"a": {"b"}, "b": set()}, False),
])  # fmt: skip
def test_the_cycle_check_can_fail(rule, graph, expected, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "GRAPH", graph)
    try:
        test_no_import_cycles()
        found = False
    except AssertionError:
        found = True
    assert found is expected
