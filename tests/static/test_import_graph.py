"""No import cycles inside ``workshop_utils``, read from the source with ``ast``.

Every ``.py`` under ``src/workshop_utils`` is parsed; every ``import``/``from ... import`` in it counts, those
inside functions too (a cycle closed by a late import still means two modules that each need the other).
Relative imports and ``workshop_utils.x`` imports are resolved to module names; ``from pkg import name``
counts as an import of ``pkg.name`` when that is a module. Importing ``a.b.c`` also runs ``a`` and ``a.b``,
so those are edges too. Imports by name at run time (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "workshop_utils"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every ``.py`` under ``root`` (a package's ``__init__`` is the package)."""
    found = {}
    for file in sorted(root.rglob("*.py")):
        parts = [package, *file.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = file
    return found


def _with_parents(name: str, modules: dict[str, Path]) -> set[str]:
    """``name`` and the packages above it that are in ``modules`` (importing a.b.c runs a and a.b first)."""
    parts = name.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1) if ".".join(parts[:n]) in modules}


def _targets(name: str, file: Path):
    """(line, the module each import statement of ``file`` names, the names it takes from it), relative ones resolved."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])]), [a.name for a in node.names]
            else:
                yield node.lineno, node.module or "", [a.name for a in node.names]


def unresolved_imports(root: Path, package: str) -> list[str]:
    """Imports of ``package.something`` that name no module of the package (a module that moved or was renamed)."""
    modules = module_names(root, package)
    bad = []
    for name, file in modules.items():
        for line, target, _ in _targets(name, file):
            if (target == package or target.startswith(package + ".")) and target not in modules:
                bad.append(f"{file.relative_to(root.parent)}:{line}: {target}")
    return bad


def imports_of(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``name`` (at ``file``) imports, anywhere in its code."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]  # level 1: this package, 2: the one above, ...
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found |= _with_parents(target, modules)
            found |= {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules}
    return found - {name}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imports_of(name, file, modules) for name, file in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per group of modules that import each other, found by depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _shown(cycles: list[list[str]]) -> str:
    return "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_every_import_names_an_existing_module():
    bad = unresolved_imports(PACKAGE, "workshop_utils")
    assert not bad, "imports of modules that do not exist (moved? renamed?):\n" + "\n".join(bad)


def test_an_import_of_a_moved_module_is_named(tmp_path):
    pkg = _fake_package(tmp_path, {"__init__.py": "", "a.py": "", "sub/__init__.py": "",
                                   "sub/b.py": "from ..a import x\n\ndef f():\n    from ..gone import y\n"})
    assert unresolved_imports(pkg, "fake") == ["fake/sub/b.py:4: fake.gone"]


def test_workshop_utils_has_no_import_cycle():
    graph = import_graph(PACKAGE, "workshop_utils")
    assert len(graph) > 20 and "workshop_utils.recipes.full_finetune_trainer" in graph  # every file was read
    assert "workshop_utils.paths" in graph["workshop_utils.results"]
    cycles = find_cycles(graph)
    assert not cycles, f"import cycles in workshop_utils (break each one): {_shown(cycles)}"


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "fake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "fake"


def test_a_cycle_is_found_and_named(tmp_path):
    pkg = _fake_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import helper\n",
        "b.py": "def helper():\n    from fake import c  # a late import closes the cycle all the same\n",
        "c.py": "import fake.a\n",
        "d.py": "from . import c\n",  # imports into the cycle, is not part of it
        "sub/__init__.py": "",
        "sub/e.py": "from .. import d\nfrom ..sub import f\n",
        "sub/f.py": "import os\n",
    })
    graph = import_graph(pkg, "fake")
    assert graph["fake.sub.e"] == {"fake", "fake.d", "fake.sub", "fake.sub.f"}
    assert graph["fake.d"] == {"fake", "fake.c"}
    cycles = find_cycles(graph)
    assert _shown(cycles) == "fake.a -> fake.b -> fake.c -> fake.a"


def test_a_package_without_cycles_passes(tmp_path):
    pkg = _fake_package(tmp_path, {"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .c import x\n",
                                   "c.py": "x = 1\n"})
    assert find_cycles(import_graph(pkg, "fake")) == []


# --------------------------------------------------------------------------- layers: commands -> recipes -> helpers
# Each layer may import its own layer and the ones below it, never one above. ``tooling`` (building notebooks,
# the set-up check, checking estimates) sits on top: it may use the commands (the set-up check installs
# `workshop lab`'s defaults), and nothing in the package imports it.
LAYERS = {"helpers": 0, "recipes": 1, "commands": 2, "tooling": 3}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    if parts and parts[0] in ("recipes", "commands", "tooling"):
        return parts[0]
    return "helpers"  # the package's top-level modules (and evaluate_metrics/)


def layer_violations(graph: dict[str, set[str]], package: str = "workshop_utils") -> list[str]:
    bad = []
    for module, imported in sorted(graph.items()):
        mine = layer_of(module)
        for other in sorted(imported):
            theirs = layer_of(other)
            if other == package:
                continue  # the package itself (its __init__: WorkshopError, DataError)
            if LAYERS[theirs] > LAYERS[mine]:
                bad.append(f"{module} ({mine}) imports {other} ({theirs})")
    return bad


def test_imports_point_one_way_commands_recipes_helpers():
    graph = import_graph(PACKAGE, "workshop_utils")
    for folder in ("commands", "tooling", "recipes"):
        assert any(name.startswith(f"workshop_utils.{folder}.") for name in graph), f"no modules under {folder}/"
    bad = layer_violations(graph)
    assert not bad, "imports against the layers (tooling -> commands -> recipes -> helpers):\n" + "\n".join(bad)


def test_an_upward_import_is_named(tmp_path):
    pkg = _fake_package(tmp_path, {
        "__init__.py": "", "paths.py": "", "answers.py": "from .recipes import r\n",  # a helper importing a recipe
        "recipes/__init__.py": "", "recipes/r.py": "from workshop_utils import paths\n",
        "commands/__init__.py": "", "commands/c.py": "from ..recipes import r\nfrom .. import answers\n",
    })
    graph = import_graph(pkg, "workshop_utils")
    assert layer_violations(graph) == ["workshop_utils.answers (helpers) imports workshop_utils.recipes (recipes)",
                                       "workshop_utils.answers (helpers) imports workshop_utils.recipes.r (recipes)"]
