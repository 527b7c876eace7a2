"""The package's imports: no cycle, and each layer imports only what lies below it.

The graph is read from the source (every ``import`` statement, at module level and inside functions:
the cycles this test was written against were each closed by an import inside a function, which an
import-time check never sees)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = [REPO / "unifybench", *sorted(REPO.glob("methods/*/unifybench_*"))]


def modules(package_dirs: list[Path]) -> dict[str, Path]:
    """Dotted module name -> its file, for every ``.py`` under each package folder."""
    found = {}
    for folder in package_dirs:
        for file in sorted(folder.rglob("*.py")):
            parts = list(file.relative_to(folder.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def import_edges(package_dirs: list[Path]) -> dict[str, dict[str, int]]:
    """Module -> {module of the walked packages it imports: line of the first such import}. ``from A
    import B`` is an edge to ``A.B`` where that is a module, else to ``A``."""
    known = modules(package_dirs)
    edges: dict[str, dict[str, int]] = {}
    for name, file in known.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        found = edges.setdefault(name, {})
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                           for alias in node.names]
            for target in targets:
                if target in known and target != name:
                    found.setdefault(target, node.lineno)
    return edges


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once every import below it is walked
    path: list[str] = []

    def walk(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(edges.get(module, {})):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := walk(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (cycle := walk(module)):
            return cycle
    return None


def describe(cycle: list[str], edges: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_walk_finds_a_cycle_closed_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("def f():\n    from .. import top\n    return top\n")
    (package / "top.py").write_text("from .sub.leaf import f\n")
    edges = import_edges([package])
    assert edges["pkg.top"] == {"pkg.sub.leaf": 1} and edges["pkg.sub.leaf"] == {"pkg.top": 2}
    assert find_cycle(edges) == ["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]
    (package / "sub" / "leaf.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_edges([package])) is None


def test_no_import_cycle():
    edges = import_edges(PACKAGES)
    assert {"unifybench.cli", "unifybench.gallery", "unifybench_unictokens.method"} <= set(edges)
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle: {describe(cycle, edges)}"


# What runs the command line itself: `python -m unifybench` and the tests' in-process runner.
CLI_CALLERS = {"unifybench.__main__", "unifybench.testing"}


def test_each_layer_imports_only_what_lies_below_it():
    """The kit (what adapters build on) imports no scorer; no library module imports the command line."""
    edges = import_edges(PACKAGES)

    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    wrong = [f"{module} imports {target} (line {line})" for module, targets in edges.items()
             for target, line in targets.items()
             if (inside(module, "unifybench.kit") and inside(target, "unifybench.scoring"))
             or (inside(target, "unifybench.cli") and not inside(module, "unifybench.cli")
                 and module not in CLI_CALLERS)]
    assert not wrong, "\n".join(wrong)


def test_adapters_import_no_private_name_of_the_core():
    private = []
    for name, file in modules(PACKAGES[1:]).items():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "unifybench":
                private += [f"{name} (line {node.lineno}): {node.module}.{alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private, "\n".join(private)


def test_superseded_module_names_still_import_with_a_warning_and_nothing_inside_uses_them():
    """unifybench.record (now run_record) and unifybench.newrows (now kit.rows): a plugin's old import
    keeps working and is told the new name; the harness and its adapters import only the new ones."""
    import importlib
    import subprocess
    import sys
    import warnings

    for old, new, name in (("unifybench.record", "unifybench.run_record", "MethodDetails"),
                           ("unifybench.newrows", "unifybench.kit.rows", "NewTokens")):
        code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
                f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)")
        told = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert new in told, told
        with warnings.catch_warnings():  # told above, in a fresh process
            warnings.simplefilter("ignore", DeprecationWarning)
            assert getattr(importlib.import_module(new), name) is getattr(importlib.import_module(old), name)
    edges = import_edges(PACKAGES)
    users = sorted(m for m, targets in edges.items() for t in targets
                   if t in ("unifybench.record", "unifybench.newrows") and m not in ("unifybench.record", "unifybench.newrows"))
    assert users == [], users
