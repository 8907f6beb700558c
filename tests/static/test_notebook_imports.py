"""Each notebook imports what it uses in one place, and never a function a later notebook teaches.

Read from the built notebooks (what attendees open): the first code cells are the Colab cell, the profile
cell and the imports cell; after them only cells tagged ``export`` (recipes, which must run copied into a
script) may hold an ``import`` at the top level. Imports inside a function or an ``if`` are left alone (a
route that imports Unsloth only where it runs). ``workshop_utils.recipes.<name>`` is the code of notebook
``NN_<name>``: a notebook may import it only when NN is its own number or an earlier one.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HEAD_CELLS = 3  # the Colab cell, the profile cell, the imports cell


def code_cells(notebook: Path) -> list[dict]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def parse_cell(source: str) -> ast.Module:
    """A code cell's Python, without its IPython magics and shell lines."""
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def top_level_imports(source: str) -> list[ast.stmt]:
    return [node for node in parse_cell(source).body if isinstance(node, (ast.Import, ast.ImportFrom))]


def scattered_imports(cells: list[dict]) -> list[str]:
    """The top-level import lines of the cells after the head that are not export cells."""
    found = []
    for number, cell in enumerate(cells[HEAD_CELLS:], start=HEAD_CELLS + 1):
        source = "".join(cell["source"])
        if "export" in cell.get("metadata", {}).get("tags", []) or source.startswith("# export"):
            continue
        found += [f"code cell {number}: {ast.unparse(node)}" for node in top_level_imports(source)]
    return found


def imported_modules(cells: list[dict]) -> set[str]:
    modules = set()
    for cell in cells:
        for node in ast.walk(parse_cell("".join(cell["source"]))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.name for a in node.names}
    return modules


def later_recipes(notebook: Path, cells: list[dict]) -> list[str]:
    """Recipe modules of later notebooks that this notebook imports."""
    number = notebook.name[:2]
    owner = {nb.stem[3:]: nb.name[:2] for nb in NOTEBOOKS}
    used = {m.split(".")[2] for m in imported_modules(cells) if re.match(r"workshop_utils\.recipes\.\w+", m)}
    return sorted(f"recipes.{name} (notebook {owner[name]})" for name in used if owner.get(name, "00") > number)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_imports_sit_in_the_imports_cell(notebook):
    cells = code_cells(notebook)
    assert len(cells) > HEAD_CELLS and "active_profile" in "".join(cells[1]["source"]), "the second code cell is the profile cell"
    assert top_level_imports("".join(cells[2]["source"])), "the third code cell imports what the notebook uses"
    scattered = scattered_imports(cells)
    assert not scattered, f"{notebook.name}: move these imports into the imports cell (code cell 3):\n" + "\n".join(scattered)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_no_notebook_imports_what_a_later_one_teaches(notebook):
    later = later_recipes(notebook, code_cells(notebook))
    assert not later, f"{notebook.name} imports code a later notebook teaches: {', '.join(later)}"


def _cell(source: str, tags=()) -> dict:
    return {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)}}


def test_a_scattered_import_is_named_and_an_export_cell_is_not():
    head = [_cell("pass"), _cell("from workshop_utils.profiles import active_profile"), _cell("import os")]
    cells = head + [_cell("# export\nimport json\n", ["export"]), _cell("x = 1\nif x:\n    import sys\n"),
                    _cell("%matplotlib inline\nfrom pathlib import Path\nprint(Path)")]
    assert scattered_imports(cells) == ["code cell 6: from pathlib import Path"]


def test_a_recipe_from_a_later_notebook_is_named():
    first = NOTEBOOKS[1]  # 01: every recipe module belongs to a later notebook
    recipe = next(nb.stem[3:] for nb in NOTEBOOKS if (ROOT / "src" / "workshop_utils" / "recipes" / f"{nb.stem[3:]}.py").is_file())
    found = later_recipes(first, [_cell(f"from workshop_utils.recipes.{recipe} import x")])
    assert found and recipe in found[0]
