"""The package's structure as DESIGN.md declares it, read from the source (ast), not by importing.

* imports run one way, down the pipeline: cli → viz → sweeps → runs → roles → patching → analysis →
  training → tasks / models → theory → foundations (seeding, config, errors, ...); an import
  counts wherever it stands (module top or inside a function);
* the module import graph has no cycles;
(only `interp_icl/models/` looks at model classes: tests/test_layout.py)
* no function in `analysis/` or `patching/` takes a filesystem path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "interp_icl"

# layer of each top-level part of the package; an import may only go to the same or a lower layer
LAYERS = {
    "cli": 9,
    "viz": 8,
    "sweeps": 7,
    "runs": 6,
    "roles": 5.5,
    "circuits": 5.5,
    "patching": 5,
    "analysis": 4,
    "training": 3,
    "tasks": 2,
    "models": 2,
    "theory": 1,
}
FOUNDATION = 0  # seeding, config, errors, jsonable, registry, curves, presets, ...


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (resolved to the longest known module name)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import module` depends on that module; `from pkg import name` on pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("interp_icl."):
                found.add(target)
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], FOUNDATION) if len(parts) > 1 else 10


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items() if name != "interp_icl"}


def test_imports_run_down_the_pipeline():
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, targets in graph().items()
        for dst in targets
        if layer(dst) > layer(src)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    # Tarjan's strongly connected components over the whole graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The two checks above can fail: a planted cycle and upward import are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from interp_icl.runs import rundir\n")
    b.write_text("import interp_icl.analysis.pipeline\n")
    known = {"interp_icl.runs", "interp_icl.runs.rundir", "interp_icl.analysis.pipeline"}
    assert imports_of("interp_icl.analysis.x", a, known) == {"interp_icl.runs.rundir"}
    assert layer("interp_icl.runs.rundir") > layer("interp_icl.analysis.x")
    assert imports_of("interp_icl.runs.y", b, known) == {"interp_icl.analysis.pipeline"}


PATH_WORDS = {"path", "run_dir", "run_path", "directory", "out_dir", "folder", "filename"}


@pytest.mark.parametrize("part", ["analysis", "patching"])
def test_analysis_and_patching_take_no_paths(part):
    """No function parameter is a path (by name or by a Path / str | Path annotation)."""
    offenders = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for arg in node.args.args + node.args.kwonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                if arg.arg in PATH_WORDS or "Path" in annotation:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}({arg.arg})")
        text = path.read_text()
        for word in ("pathlib", "open(", ".read_text(", ".write_text(", "to_parquet(", "to_csv("):
            if word in text:
                offenders.append(f"{path.relative_to(PACKAGE)} uses {word}")
    assert not offenders, offenders
