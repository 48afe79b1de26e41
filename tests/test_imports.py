"""Package boundaries, checked on the source with the standard library's `ast` (imports inside functions
count too: a function-level import still makes a cycle, it only hides it).

- no import cycle inside `model/`, `app/` or `training/`;
- `model/` (the library) imports nothing from `app/`, `training/`, `benchmarks/` or `tests/`;
- `app/` and `training/` import nothing from `benchmarks/` or `tests/`;
- `benchmarks/` imports nothing from `tests/`;
- `tests/` imports from `benchmarks/` only in `tests/benchmarks/` (tests of the benchmark scripts). The
  shared harness lives where both may import it: `harness` (real server), `training.datasets` (face
  data, LFW readers), `training.perturb` (a second checkpoint), `model.crops` (the crop cache).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "app", "training", "benchmarks", "tests")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in `path` (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import func` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a non-module attribute: the nearest module
                t = t.rpartition(".")[0]
            if t and t.split(".")[0] in PACKAGES:
                out.add(t)
    return out


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def top(name: str) -> str:
    return name.split(".")[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None. Iterative DFS with colours."""
    colour = {n: 0 for n in graph}
    for root in graph:
        if colour[root]:
            continue
        stack, path = [(root, iter(sorted(graph[root])))], [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


@pytest.mark.parametrize("package", ["model", "app", "training"])
def test_no_import_cycle_inside(package):
    sub = {n: {t for t in ts if top(t) == package} for n, ts in GRAPH.items() if top(n) == package}
    assert find_cycle(sub) is None, " -> ".join(find_cycle(sub))


def test_no_import_cycle_across_the_packages_the_service_ships():
    sub = {n: {t for t in ts if top(t) in ("model", "app", "training")} for n, ts in GRAPH.items()
           if top(n) in ("model", "app", "training")}
    assert find_cycle(sub) is None, " -> ".join(find_cycle(sub))


FORBIDDEN = {"model": {"app", "training", "benchmarks", "tests"}, "app": {"benchmarks", "tests"},
             "training": {"benchmarks", "tests", "app"}, "benchmarks": {"tests"}}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package):
    bad = sorted(f"{n} imports {t}" for n, ts in GRAPH.items() if top(n) == package for t in ts
                 if top(t) in FORBIDDEN[package])
    assert not bad, bad


def test_tests_import_benchmarks_only_to_test_the_benchmark_scripts():
    bad = sorted(f"{n} imports {t}" for n, ts in GRAPH.items() if top(n) == "tests"
                 and not n.startswith("tests.benchmarks") for t in ts if top(t) == "benchmarks")
    assert not bad, (f"{bad}: import the harness from harness, training.datasets, training.perturb "
                     "or model.crops instead")


def test_the_checker_sees_cycles_and_function_level_imports():
    """The checker itself on a tiny graph and on source with an import hidden inside a function."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "model.weights" in GRAPH["model.pipeline"]
    assert "model.fast" in GRAPH["model.pipeline"]  # imported inside Embedder.__init__
