"""The package stays easy to map: ruff finds no unused import or undefined name, no module of
``workshop_utils`` passes 400 lines and no function 60 (a newcomer reads any of them in one sitting).

Generated recipe modules count too: a notebook's export cell is also code someone has to read.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "workshop_utils"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_modules_stay_short():
    assert len(package_modules()) > 10
    too_long = {str(p.relative_to(ROOT)): n for p in package_modules()
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {too_long}"


def test_functions_stay_short():
    found = [line for p in package_modules() for line in long_functions(p)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them): {found}"


def test_the_size_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    sample = tmp_path / "sample.py"
    sample.write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n", encoding="utf-8")
    assert [line.split()[1] for line in long_functions(sample)] == ["long"]


def ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.fail("ruff is not installed: run `make setup` (it is pinned in requirements-dev.txt)")


def test_ruff_finds_nothing():
    """pyflakes' checks as configured in pyproject.toml: unused imports, undefined names, syntax errors."""
    proc = subprocess.run([*ruff(), "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_ruff_catches_an_unused_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n", encoding="utf-8")
    proc = subprocess.run([*ruff(), "check", "--no-cache", "--isolated", "--select", "F", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "F401" in proc.stdout
