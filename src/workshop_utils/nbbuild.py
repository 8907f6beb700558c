"""Notebooks are written as plain-text sources and built into clean ``.ipynb`` files.

``notebooks/_sources/NN_name.py`` uses the "percent" cell format::

    # %% [markdown]
    # # A title
    # Prose, each line behind "# ".

    # %%
    print("a code cell")

    # %% tags=["solution"]
    ...

A notebook may be written in parts: ``NN_name.py`` first, then every ``NN_name+PART.py`` in sorted
order. Cells tagged ``solution`` are stored collapsed (``source_hidden``), so exercise solutions stay
out of the attendee's way but still run, and are tested, with the notebook.

``python -m workshop_utils.nbbuild`` writes ``notebooks/NN_name.ipynb`` for every source, without outputs
or execution counts; ``--check`` fails when a committed notebook differs from its source (the library
and the notebooks stay in sync, as nbdev does it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

CELL_RE = re.compile(r"^# %%(?P<md> \[markdown\])?(?:\s+tags=(?P<tags>\[.*\]))?\s*$")


def parse_source(text: str) -> list[dict]:
    cells: list[dict] = []
    current: dict | None = None
    for line in text.splitlines():
        match = CELL_RE.match(line)
        if match:
            current = {"markdown": bool(match.group("md")), "tags": json.loads(match.group("tags") or "[]"), "lines": []}
            cells.append(current)
            continue
        if current is None:
            if line.strip():
                raise ValueError(f"text before the first '# %%' marker: {line!r}")
            continue
        current["lines"].append(line)
    out = []
    for cell in cells:
        lines = cell["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if cell["markdown"]:
            lines = [l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines]
        source = "\n".join(lines)
        metadata = {"tags": cell["tags"]} if cell["tags"] else {}
        if "solution" in cell["tags"]:
            metadata["jupyter"] = {"source_hidden": True}
        if cell["markdown"]:
            out.append({"cell_type": "markdown", "metadata": metadata, "source": _split(source)})
        else:
            out.append({"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [], "source": _split(source)})
    return out


def _split(source: str) -> list[str]:
    parts = source.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def parts_of(source_path: Path) -> list[Path]:
    return [source_path, *sorted(source_path.parent.glob(f"{source_path.stem}+*.py"))]


def build(source_path: Path) -> str:
    cells = []
    for part in parts_of(source_path):
        cells.extend(parse_source(part.read_text(encoding="utf-8")))
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for i, cell in enumerate(notebook["cells"]):
        cell["id"] = f"{source_path.stem[:2]}-{i:03d}"
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .paths import repo_root

    parser = argparse.ArgumentParser(description="build notebooks/*.ipynb from notebooks/_sources/*.py")
    parser.add_argument("--check", action="store_true", help="fail if a notebook differs from its source")
    parser.add_argument("names", nargs="*", help="only these sources (stems)")
    args = parser.parse_args(argv)
    nb_dir = repo_root() / "notebooks"
    stale = []
    for src in sorted(p for p in (nb_dir / "_sources").glob("*.py") if "+" not in p.stem):
        if args.names and src.stem not in args.names:
            continue
        target = nb_dir / f"{src.stem}.ipynb"
        text = build(src)
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        elif not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print("built", target.relative_to(repo_root()))
    if stale:
        print(f"out of sync with notebooks/_sources: {', '.join(stale)}; run `python -m workshop_utils.nbbuild`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
