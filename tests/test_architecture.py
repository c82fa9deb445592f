"""The package's imports point one way: no module imports, directly or through others, a
module that imports it back, and no subpackage (``transmem.training``, ``transmem.transfer``...)
one that imports it back.

The check reads every module of ``src/transmem`` with :mod:`ast` and counts every import
statement, at the top of a module and inside functions alike (a lazy import inside a
function is still a dependency). Run it by hand with ``python tests/test_architecture.py``:
it prints each cycle, between modules and between subpackages, or nothing.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = "transmem"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from a.b import c`` imports module a.b.c when there is one, else names of a.b
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    edges = [f"  {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"cycle of {len(component)} modules:\n" + "\n".join(edges)


def package_of(module: str) -> str:
    """The subpackage (or top-level module) ``module`` belongs to: ``transmem.training.loop`` ->
    ``transmem.training``, ``transmem.cli`` -> itself; the package itself stays ``transmem``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with each module collapsed to its :func:`package_of` (imports inside one dropped)."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        home = package_of(module)
        packages.setdefault(home, set()).update(package_of(target) for target in targets if package_of(target) != home)
    return packages


# ----------------------------------------------------------------------------- the checker's own tests


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_checker_finds_cycles_through_function_level_and_relative_imports(tmp_path):
    root = _write(
        tmp_path / PACKAGE,
        {
            "__init__.py": "",
            "a.py": "from transmem.b import thing\n",
            "b.py": "def f():\n    from . import c\n",
            "c.py": "import transmem.a\n",
            "sub/__init__.py": "from .d import x\n",
            "sub/d.py": "from ..e import y\n",
            "e.py": "def g():\n    from transmem.sub import d\n",
            "leaf.py": "from transmem import a\n",
        },
    )
    graph = import_graph(root)
    assert graph["transmem.b"] == {"transmem.c"}
    assert graph["transmem.sub.d"] == {"transmem.e"}
    assert graph["transmem.leaf"] == {"transmem.a"}
    assert cycles(graph) == [["transmem.a", "transmem.b", "transmem.c"], ["transmem.e", "transmem.sub.d"]]


def test_checker_passes_a_layered_package(tmp_path):
    root = _write(tmp_path / PACKAGE, {"__init__.py": "", "low.py": "import os\n", "high.py": "from transmem.low import x\n"})
    assert cycles(import_graph(root)) == []


def test_checker_finds_cycles_between_packages_whose_modules_have_none(tmp_path):
    root = _write(
        tmp_path / PACKAGE,
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "",
            "low/b.py": "from transmem.high.c import x\n",
            "high/__init__.py": "",
            "high/c.py": "def f():\n    from transmem.low import a\n",
            "top.py": "from transmem.high import c\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == []
    packages = package_graph(graph)
    assert packages == {
        "transmem": set(),
        "transmem.low": {"transmem.high"},
        "transmem.high": {"transmem.low"},
        "transmem.top": {"transmem.high"},
    }
    assert cycles(packages) == [["transmem.high", "transmem.low"]]


def test_checker_passes_layered_packages(tmp_path):
    root = _write(
        tmp_path / PACKAGE,
        {
            "__init__.py": "",
            "low/__init__.py": "from .a import x\n",
            "low/a.py": "from transmem.low.b import y\n",
            "low/b.py": "",
            "high/__init__.py": "",
            "high/c.py": "from transmem.low.b import y\nfrom transmem.high import d\n",
            "high/d.py": "",
        },
    )
    packages = package_graph(import_graph(root))
    assert packages == {"transmem": set(), "transmem.low": set(), "transmem.high": {"transmem.low"}}
    assert cycles(packages) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, component) for component in found)


def test_no_import_cycles_between_packages():
    graph = package_graph(import_graph())
    assert {"transmem.training", "transmem.transfer", "transmem.run"} <= graph.keys()
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, component) for component in found)


#: The floors of the package, lowest first: a module imports only modules of its own floor or
#: below (docs/architecture.md). The most specific prefix of a module's name decides.
FLOORS = {
    "transmem.errors": 0,
    "transmem.version": 0,
    "transmem.memory_errors": 0,
    "transmem.progress": 0,
    "transmem.schema": 1,
    "transmem.data": 2,
    "transmem.models": 2,
    "transmem.config": 3,
    "transmem.storage": 4,
    "transmem.evaluation": 5,
    "transmem.predictor": 5,
    "transmem.transfer": 6,
    "transmem.training": 7,
    "transmem.run": 8,  # a run's lifecycle: the folder, the source ranking, the loop, the saved model
    "transmem.benchmark": 9,
    "transmem.speed": 9,  # beside the benchmark; the benchmark's estimate imports it, never back
    "transmem.cli": 10,
    "transmem.__main__": 10,
    "transmem": 10,  # the package's top: transmem.load_config, train and load, each importing its layer when called
}


def floor(module: str) -> int:
    prefixes = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    return FLOORS[max(prefixes, key=len)]


def test_imports_point_down_the_floors():
    graph = import_graph()
    upward = [
        f"{a} (floor {floor(a)}) -> {b} (floor {floor(b)})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if floor(b) > floor(a)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_import_transmem_loads_no_layer_until_its_api_is_called():
    """The package's top imports each layer when its function is called: ``import transmem``
    loads neither torch nor the run layer (README's Python example calls the functions)."""
    import subprocess

    code = "import sys, transmem\nassert not {'torch', 'transmem.run'} & set(sys.modules), sorted(sys.modules)\n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_schema_names_every_transfer_method_in_the_registry_order():
    """Stored models are read below the transfer package, so the schema checks
    ``transfer.method`` against its own list of names: it must be the registry's."""
    from transmem.schema import METHOD_NAMES
    from transmem.transfer.methods import METHODS

    assert tuple(METHODS) == METHOD_NAMES


def test_the_schema_names_the_memory_merges_the_tmu_implements():
    from transmem.models.tmu import TransferableMemory
    from transmem.schema import MEMORY_MERGES

    for merge in MEMORY_MERGES:
        assert TransferableMemory(4, [4], merge=merge).merge == merge
    with pytest.raises(ValueError, match="merge must be one of"):
        TransferableMemory(4, [4], merge="max")


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module but its docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_run_folder_file_names_are_spelled_in_one_module():
    from transmem.storage import run_folder

    names = {*run_folder.RUN_FILES, run_folder.RUN_LOCK}
    home = ROOT / "storage" / "run_folder.py"
    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in sorted(ROOT.rglob("*.py"))
        if path != home
        for line, value in _string_constants(path)
        if value in names or value.lstrip("/") in names
    ]
    assert not found, "spell these through transmem.storage.run_folder:\n" + "\n".join(found)


def test_only_the_cli_sees_argparse():
    """Requests between layers are frozen dataclasses: no module below cli.py imports argparse."""
    found = [
        str(path.relative_to(ROOT))
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "cli.py" and "argparse" in {name for name, _ in _imported_names(path)}
    ]
    assert not found, f"argparse below the CLI: {found}"


def _imported_names(path: Path) -> list[tuple[str, int]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append((node.module.split(".")[0], node.lineno))
    return names


#: Functions a newcomer reads at a glance; the CLI's argparse table is the one exception.
MAX_FUNCTION_LINES = 60
LONG_ON_PURPOSE = {("cli.py", "_parser")}


def test_functions_are_short_enough_to_read_at_a_glance():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(ROOT.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (path.name, node.name) not in LONG_ON_PURPOSE
    ]
    assert not long, "split these:\n" + "\n".join(long)


if __name__ == "__main__":
    found = 0
    for graph in (import_graph(), package_graph(import_graph())):
        for component in cycles(graph):
            print(describe(graph, component))
            found += 1
    sys.exit(1 if found else 0)
