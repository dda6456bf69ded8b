"""The package's import graph, read from the sources with ``ast``: no module imports (directly, through a
chain, or lazily inside a function) one that imports it back, and imports point one way down the layers
commands -> recipes -> {training, detect} -> {bilevel, models, data, exif} -> ops -> tasks. An import inside
a function says why it is there (``# lazy: REASON``), except in the command line, whose rule is written once
in :mod:`bfdkern.commands`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bfdkern"

LAYERS = {
    "tasks": 0,
    "exif.vocab": 0,  # a leaf of plain data that the task spec reads (the BLADES heads' classes)
    "atomic": 0,
    "lazy": 0,
    "devices": 0,
    "version": 0,
    "figures": 0,
    "ops": 1,
    "bilevel": 2,
    "models": 2,
    "data": 2,
    "exif": 2,
    "training": 3,
    "detect": 3,
    "recipes": 4,
    "commands": 5,
    "cli": 5,
    "__main__": 5,
}
"""Rank of each part (the longest matching prefix of a module's name below ``bfdkern``): a module may import
modules of its own rank or lower."""


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``package`` (a package is its __init__.py)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules) -> str | None:
    """The module ``name`` refers to: itself, or the package that defines it as an attribute."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its source (top level or inside functions).
    ``from a import b`` is an edge to ``a.b`` when that is a module, else to ``a``."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        path.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if colour[start] == 0 and (cycle := visit(start)):
            return cycle
    return None


def rank(module: str) -> int | None:
    """The layer of a module (None: the package's root, which re-exports the public API)."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


LAZY_COMMENT = re.compile(r"#\s*lazy:\s*\S")
"""``# lazy: REASON``: why an import sits inside a function (an optional dependency, the command line's start-up
time, a heavy import only a rare path needs)."""
LAZY_BY_CONVENTION = ("commands", "cli")
"""Parts of the package whose function-local imports follow the rule in :mod:`bfdkern.commands` instead."""


def function_local_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements inside a function (or a method, or a function nested in either) of ``tree``."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def unexplained_local_imports(package: Path = PACKAGE) -> list[str]:
    """``path:line: statement`` of each function-local import outside :data:`LAZY_BY_CONVENTION` with no
    ``# lazy: REASON`` comment on one of its lines or alone on the line above it."""
    missing = []
    for name, path in sorted(module_files(package).items()):
        if name.partition(".")[2].split(".")[0] in LAZY_BY_CONVENTION:
            continue
        lines = path.read_text().splitlines()
        for node in function_local_imports(ast.parse("\n".join(lines), str(path))):
            own = lines[node.lineno - 1 : node.end_lineno]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if not any(LAZY_COMMENT.search(line) for line in own) and not LAZY_COMMENT.match(above):
                missing.append(f"{path.relative_to(package.parent)}:{node.lineno}: {own[0].strip()}")
    return missing


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down_the_layers():
    graph = import_graph()
    unranked = sorted(m for m in graph if m != "bfdkern" and rank(m) is None)
    assert not unranked, f"modules outside every layer (add them to LAYERS): {unranked}"
    upward = sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if "bfdkern" not in (a, b) and rank(b) > rank(a)
    )
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)
    assert not [a for a, targets in graph.items() if "bfdkern" in targets], "only users import the package root"


def test_each_function_local_import_says_why():
    missing = unexplained_local_imports()
    assert not missing, (
        "imports inside functions belong at the module top, or carry `# lazy: REASON` on their line or the line "
        "above (an optional dependency, the command line's start-up time, a heavy import only a rare path needs):\n"
        + "\n".join(missing)
    )


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "files",
    [
        # a lazy import inside a function closes the loop
        {"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "def f():\n    from pkg import a\n"},
        # a chain of three, through a relative import
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import x\n",
            "pkg/b.py": "from .c import y\nx = 1\n",
            "pkg/c.py": "from pkg import a\ny = 2\n",
        },
        # a package's __init__ and its submodule, through a name the __init__ defines
        {
            "pkg/__init__.py": "from pkg.sub.m import thing\nCONST = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/m.py": "from pkg import CONST\nthing = CONST\n",
        },
    ],
    ids=["lazy", "chain", "package-init"],
)
def test_the_cycle_check_finds_cycles(tmp_path, files):
    graph = import_graph(_write(tmp_path, files) / "pkg")
    assert find_cycle(graph) is not None


def test_the_cycle_check_accepts_a_package_importing_its_submodules(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.a import f\nfrom pkg import b\n",
        "pkg/a.py": "from pkg import b\n\ndef f():\n    return b.g()\n",
        "pkg/b.py": "def g():\n    return 1\n",
    }
    graph = import_graph(_write(tmp_path, files) / "pkg")
    assert graph == {"pkg": {"pkg.a", "pkg.b"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert find_cycle(graph) is None


def test_the_local_import_check_wants_a_reason(tmp_path):
    files = {
        "pkg/__init__.py": "import os\n",
        "pkg/a.py": (
            "def f():\n"
            "    import json\n"  # no reason: found
            "    import csv  # lazy: optional dependency\n"
            "    # lazy: heavy, only on a rare path\n"
            "    from pkg import b\n"
            "    import re  # lazy:\n"  # a reason that says nothing: found
            "\n"
            "class C:\n"
            "    def m(self):\n"
            "        import sys\n"  # a method: found
        ),
        "pkg/b.py": "import json\n",
        "pkg/commands/__init__.py": "",
        "pkg/commands/run.py": "def run():\n    import json\n",  # the command line's own rule
    }
    missing = unexplained_local_imports(_write(tmp_path, files) / "pkg")
    assert missing == ["pkg/a.py:2: import json", "pkg/a.py:6: import re  # lazy:", "pkg/a.py:10: import sys"]
