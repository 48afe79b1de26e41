"""Package boundaries, checked on the source with the standard library's `ast` (imports inside functions
count too: a function-level import still makes a cycle, it only hides it).

- no import cycle inside `model/`, `app/`, `training/` or `faceid_client/` (client/faceid_client/, its own
  distribution), nor across the packages the two distributions ship;
- `faceid_client/` (the `faceid` command, the Python client) imports nothing of the server (`app/`, `model/`,
  `training/`), nor torch, numpy or the server's frameworks: the server depends on the client, never the
  other way round; a subprocess checks that importing its CLI loads neither torch nor `app`;
- `model/` (the library) imports nothing from `app/`, `training/`, `benchmarks/`, `harness/` or `tests/`;
- `app/` and `training/` import nothing from `benchmarks/`, `harness/` or `tests/`;
- `harness/` and `benchmarks/` import nothing from `tests/`;
- `tests/` imports from `benchmarks/` only in `tests/benchmarks/` (tests of the benchmark scripts). The
  shared harness lives where both may import it: `harness` (real server, embedded PostgreSQL; a top-level
  package that no distribution installs), `training.datasets` (face data, LFW readers), `training.perturb`
  (a second checkpoint), `model.crops` (the crop cache).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# each package and the directory that holds it (the client is its own distribution, under client/)
ROOTS = {"model": REPO, "app": REPO, "training": REPO, "faceid_client": REPO / "client", "harness": REPO,
         "benchmarks": REPO, "tests": REPO}
PACKAGES = tuple(ROOTS)
SHIPPED = ("model", "app", "training", "faceid_client")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p, root): p for pkg, root in ROOTS.items() for p in sorted((root / pkg).rglob("*.py"))}


def from_base(name: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` in module `name` reads from (relative levels resolved)."""
    base = node.module or ""
    if node.level:
        anchor = name.split(".") if is_pkg else name.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return base


def imported_names(name: str, path: Path) -> list[str]:
    """Every module name imported anywhere in `path` (module level or inside functions), relative ones resolved;
    `from x import y` gives both `x.y` and `x`."""
    is_pkg = path.name == "__init__.py"
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(name, is_pkg, node)
            out += [base, *(f"{base}.{a.name}" for a in node.names)]
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in `path` (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(name, is_pkg, node)
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


@pytest.mark.parametrize("package", ["model", "app", "training", "faceid_client"])
def test_no_import_cycle_inside(package):
    sub = {n: {t for t in ts if top(t) == package} for n, ts in GRAPH.items() if top(n) == package}
    assert find_cycle(sub) is None, " -> ".join(find_cycle(sub))


def test_no_import_cycle_across_the_packages_the_service_ships():
    sub = {n: {t for t in ts if top(t) in SHIPPED} for n, ts in GRAPH.items() if top(n) in SHIPPED}
    assert find_cycle(sub) is None, " -> ".join(find_cycle(sub))


FORBIDDEN = {"model": {"app", "training", "faceid_client", "benchmarks", "harness", "tests"},
             "app": {"benchmarks", "harness", "tests"},
             "training": {"benchmarks", "harness", "tests", "app"},
             "faceid_client": {"app", "model", "training", "benchmarks", "harness", "tests"},
             "harness": {"benchmarks", "tests"}, "benchmarks": {"tests"}}


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


# What the client's distribution installs (client/pyproject.toml) and the standard library: nothing heavier.
CLIENT_THIRD_PARTY = {"httpx", "typer", "tqdm", "pydantic"}


def test_the_client_imports_only_the_standard_library_and_its_own_dependencies():
    bad = sorted(f"{n} imports {t}" for n, path in modules().items() if top(n) == "faceid_client"
                 for t in imported_names(n, path) if t and top(t) not in sys.stdlib_module_names
                 and top(t) not in CLIENT_THIRD_PARTY | {"faceid_client", "__future__"})
    assert not bad, bad
    declared = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {d.split(">")[0].split("=")[0] for d in declared} == CLIENT_THIRD_PARTY


def test_importing_the_client_cli_loads_neither_torch_nor_the_server():
    """In a process of its own, from outside the repository (so `app` could only come from an installed server)."""
    code = ("import faceid_client.cli, sys; bad = sorted({'torch', 'numpy', 'app', 'model', 'training', 'fastapi'} "
            "& set(sys.modules)); assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(REPO / "client")}
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_checker_sees_cycles_and_function_level_imports():
    """The checker itself on a tiny graph and on source with an import hidden inside a function."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "model.weights" in GRAPH["model.pipeline"]
    assert "model.fast" in GRAPH["model.pipeline"]  # imported inside Embedder.__init__
    assert "faceid_client.archive" in GRAPH["faceid_client.cli"]  # imported inside the export command
    assert "faceid_client.labels" in GRAPH["app.schemas"]  # the server imports the client's label rule


# --- app/api reaches the gallery through services ----------------------------------------------------------------
# What app/api may import from app/gallery: `app.gallery.models` (the row types the answers describe, MAX_ID, the
# feedback KINDS), and in deps.py the store it hands to routes (StoreDep). The store's and the database's
# exceptions, the index, the feedback store and the rest are reached through app/services.
API_GALLERY_ALLOWED = {"app.gallery.models"}
API_GALLERY_ALLOWED_IN = {"app.api.deps": {"app.gallery.store"}}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of everything `path` imports (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_app_api_imports_no_gallery_internals():
    bad = sorted(f"{n} imports {t}" for n, ts in GRAPH.items() if n.startswith("app.api") for t in ts
                 if t.startswith("app.gallery") and t not in API_GALLERY_ALLOWED | API_GALLERY_ALLOWED_IN.get(n, set()))
    bad += sorted(f"{n} imports sqlalchemy" for n, p in modules().items()
                  if n.startswith("app.api") and "sqlalchemy" in third_party_imports(p))
    assert not bad, f"{bad}: reach the gallery through app/services (or the StoreDep of app/api/deps.py)"


# --- model/ builds no API JSON ------------------------------------------------------------------------------------
# The library returns values (dataclasses, arrays); the API's answer shapes are built in app/ (schemas, services).
# Checked three ways: model/ imports no web or schema framework; nothing in model/ is named like an answer builder
# (`public`, `*_public`, `*Public`: the app's names for them, STYLE.md); no dict literal in model/ carries three or
# more of the fields of one schema in app/schemas.py (file formats such as `ImpostorTail.to_dict` share none).
WEB = {"fastapi", "starlette", "pydantic", "pydantic_settings"}


def schema_fields() -> dict[str, set[str]]:
    tree = ast.parse((REPO / "app" / "schemas.py").read_text())
    return {c.name: {s.target.id for s in c.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            for c in tree.body if isinstance(c, ast.ClassDef)}


def api_json_in(source: str, fields: dict[str, set[str]]) -> list[str]:
    """What in `source` builds an API answer: an answer-builder name, or a dict literal with >= 3 fields of one
    schema."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
                node.name == "public" or node.name.endswith("_public") or node.name.endswith("Public")):
            found.append(f"line {node.lineno}: {node.name}")
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            for name, f in fields.items():
                if len(keys & f) >= 3:
                    found.append(f"line {node.lineno}: a dict with {sorted(keys & f)} of {name}")
    return found


def test_model_builds_no_api_json():
    fields = schema_fields()
    bad = [f"{p.relative_to(REPO)} {what}" for n, p in modules().items() if top(n) == "model"
           for what in api_json_in(p.read_text(), fields)]
    bad += [f"{p.relative_to(REPO)} imports {sorted(third_party_imports(p) & WEB)}" for n, p in modules().items()
            if top(n) == "model" and third_party_imports(p) & WEB]
    assert not bad, f"{bad}: return a value from model/ and build its JSON in app/"


def test_the_api_json_check_sees_what_model_used_to_build():
    """The checker on the shapes model/calibration.py and model/selfcheck.py built before issue 28."""
    fields = schema_fields()
    old_op = ('class OperatingPoint:\n    def public(self):\n        return {"threshold": 1, "target_fpir": 2, '
              '"compared_identities": 3, "source": "x"}\n')
    assert len(api_json_in(old_op, fields)) == 2
    assert api_json_in("def report(s):\n    return {'threshold': 1, 'source': 2, 'warnings': []}\n", fields)
    assert not api_json_in("def to_dict(t):\n    return {'n_pairs': 1, 'source': 2, 'points': []}\n", fields)
