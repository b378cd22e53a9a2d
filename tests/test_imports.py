"""The import structure of src/, read from the source (nothing is imported):

- no import cycle between dedupkit modules, through module-level or function-level imports;
- every third-party module src/ imports is declared in pyproject.toml, and a module loaded with
  ``require(module, extra)`` is in that extra (or a core dependency).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dedupkit"


def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package folder."""
    out = {}
    for p in package.rglob("*.py"):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The package's modules that ``name`` imports: at module level, or anywhere with ``lazy``.

    ``from a import b`` counts as importing a.b when that is a module, else a. Imports under
    ``if TYPE_CHECKING:`` never run, and those of a module-level ``__getattr__`` (the lazy public
    API of ``dedupkit/__init__.py``) run only when a user asks for such a name, never when a module
    takes ``__version__`` from the package, so neither counts."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                continue
            if top and isinstance(ch, ast.FunctionDef) and ch.name == "__getattr__":
                continue  # a package's lazy public names (PEP 562): run on attribute access only
            counts = top or lazy
            if isinstance(ch, ast.Import) and counts:
                found.update(a.name for a in ch.names if a.name in modules)
            elif isinstance(ch, ast.ImportFrom) and counts:
                if ch.level:
                    base = name.split(".")[: None if is_pkg else -1]
                    base = base[: len(base) - (ch.level - 1)]
                    mod = ".".join(base + ([ch.module] if ch.module else []))
                else:
                    mod = ch.module or ""
                for a in ch.names:
                    if f"{mod}.{a.name}" in modules:
                        found.add(f"{mod}.{a.name}")
                    elif mod in modules:
                        found.add(mod)
            visit(ch, top and not isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    found.discard(name)
    return found


def import_graph(package: Path, lazy: bool) -> dict[str, set[str]]:
    mods = _modules(package)
    return {n: _imports(n, p, mods, lazy) for n, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(frozenset(comp))
    return out


def _fmt(cs) -> str:
    return "; ".join(" <-> ".join(sorted(c)) for c in cs)


def test_cycle_finder_finds_cycles_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import x\n")
    (pkg / "sub" / "c.py").write_text("import pkg.a\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from pkg.sub import d\n")
    (pkg / "sub" / "d.py").write_text("from ..sub import c\n")
    (pkg / "__init__.py").write_text("def __getattr__(name):\n    from pkg import a\n")
    (pkg / "e.py").write_text("from pkg import VERSION\n")  # the package, not its lazy names
    assert cycles(import_graph(pkg, lazy=False)) == []
    assert cycles(import_graph(pkg, lazy=True)) == [frozenset({"pkg.a", "pkg.b", "pkg.sub.c"})]


def test_no_import_cycle_between_module_level_imports():
    found = cycles(import_graph(PACKAGE, lazy=False))
    assert not found, f"import cycles in src/dedupkit: {_fmt(found)}"


def lazy_back_edges(package: Path) -> set[tuple[str, str]]:
    """Function-level imports (importer, imported) whose two modules lie on one import cycle."""
    top, lazy = import_graph(package, lazy=False), import_graph(package, lazy=True)
    comp = {m: c for c in cycles(lazy) for m in c}
    return {(u, v) for u in lazy for v in lazy[u] - top[u] if u in comp and v in comp[u]}


def test_lazy_back_edges_name_the_import_that_closes_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import pkg.b\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.a\n    import pkg.c\n")
    (pkg / "c.py").write_text("")
    assert lazy_back_edges(pkg) == {("pkg.b", "pkg.a")}


def test_no_import_cycle_through_function_level_imports():
    """A lazy import is harmless at import time but still ties two layers together: none may close
    a cycle either (move the shared piece to a lower module instead)."""
    found = sorted(lazy_back_edges(PACKAGE))
    assert not found, f"function-level imports that close an import cycle: {found}"


# ---- declared dependencies -------------------------------------------------------------------


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _declared() -> dict[str, set[str]]:
    """'core' and each extra -> the normalised distribution names it lists."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
    groups = {"core": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    return {g: {_norm(name.match(r).group(1)) for r in reqs} for g, reqs in groups.items()}


def _third_party() -> dict[str, set[str]]:
    """Top-level third-party module name -> the src files that import it (module or function level)."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top != "dedupkit" and top not in sys.stdlib_module_names and top != "tomli":
                    out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def _required() -> list[tuple[str, str, str]]:
    """(module, extra, file) of every ``require("module", "extra")`` call in src/."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                    and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args)):
                out.append((node.args[0].value, node.args[1].value, str(path.relative_to(ROOT))))
    return out


@functools.cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _dists(module: str) -> set[str]:
    """Distributions that may provide a top-level module: the installed one, else its own name."""
    top = module.split(".")[0]
    return {_norm(d) for d in _installed().get(top, [])} | {_norm(top)}


def _unresolved(modules) -> list[str]:
    """Modules not installed here whose distribution name is not their own (faiss: faiss-cpu): a
    venv without the extras cannot map them; the project's .venv (dev extras) checks them all."""
    return sorted({m for m in modules if m.split(".")[0] not in _installed()})


def test_pyproject_declares_every_third_party_import():
    declared = set().union(*_declared().values())
    missing = {m: sorted(files) for m, files in _third_party().items() if not _dists(m) & declared}
    unknown = set(_unresolved(missing))
    bad = {m: f for m, f in missing.items() if m not in unknown}
    assert not bad, f"src/ imports modules no dependency or extra of pyproject.toml provides: {bad}"
    if unknown:
        pytest.skip(f"not installed here, so their distributions are unknown: {sorted(unknown)}")


def test_required_modules_are_in_their_extra():
    groups = _declared()
    calls = _required()
    assert calls, "no require() calls found: the scan is broken"
    wrong = [(m, f"{f}: require({m!r}, {x!r})") for m, x, f in calls
             if x not in groups or not _dists(m) & (groups[x] | groups["core"])]
    unknown = set(_unresolved(m for m, _ in wrong))
    bad = [w for m, w in wrong if m not in unknown]
    assert not bad, f"require() names an extra that does not provide the module: {bad}"
    if unknown:
        pytest.skip(f"not installed here, so their distributions are unknown: {sorted(unknown)}")


def test_module_level_third_party_imports_are_core_dependencies():
    """A module-level import runs whenever its module loads; only core dependencies may do that
    (the extras' modules are imported inside functions, through require())."""
    core = _declared()["core"]
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for n in names:
                top = n.split(".")[0]
                if top != "dedupkit" and top not in sys.stdlib_module_names and not _dists(top) & core:
                    bad.append(f"{path.relative_to(ROOT)}: {n}")
    assert not bad, f"module-level imports of non-core dependencies: {bad}"
