"""The clean-notebooks gate: committed notebooks carry no outputs, no machine paths, no secrets.

A notebook saved from JupyterLab keeps what it printed, its execution counts, sometimes the absolute
path of the machine it ran on and, worst of all, a token somebody pasted into a cell. None of that
belongs in the repository. This module finds it::

    python -m workshop_utils.tooling.nbclean --check notebooks   # exit 1, one line per problem
    python -m workshop_utils.tooling.nbclean notebooks           # strip outputs and execution counts in place (nbstripout)

What ``--check`` flags, for every ``*.ipynb`` under the given folders (or the given files):

* a code cell with outputs or an execution count;
* an absolute path of a machine (``/home/...``, ``/Users/...``, ``C:\\Users\\...``, ``/work/...``,
  ``/root/...``, ``/tmp/...``) anywhere in the notebook's JSON;
* anything shaped like a secret (a Hugging Face token ``hf_...``, ``api_key=<long value>``, a private
  key block, well-known token prefixes). Matches are shown masked, never in full;
* a notebook that differs from what ``workshop_utils.tooling.nbbuild`` builds from ``notebooks/_sources``
  (checked when the folder has a ``_sources`` folder), and a source without its notebook.

Stripping fixes the first kind only; the others mean editing the source and rebuilding.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Iterator

# ----------------------------------------------------------------------------- patterns
# An absolute path of somebody's machine: home folders, the usual scratch and work roots, Windows
# profiles. The look-behind keeps relative paths such as ``outputs/tmp/x`` or ``a/home/b`` out.
_ABS_PATH_RE = re.compile(
    r"(?<![\w.~/-])(?:/(?:home|Users|root|work|tmp|mnt|private/var|var/folders|opt/conda)/[^\s\"'`<>)]*"
    r"|[A-Za-z]:\\{1,2}(?:Users|Documents and Settings)\\{1,2}[^\s\"'`<>)]*)"
)

# Things shaped like credentials. Each entry: (what, pattern). Patterns require the long, random
# looking part so that words like ``pad_token`` or ``hf_hub_download`` never match.
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("Hugging Face token", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}")),
    ("OpenAI-style key", re.compile(r"(?<![A-Za-z0-9])sk-(?:proj-)?[A-Za-z0-9_-]{20,}")),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("AWS access key", re.compile(r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![A-Z0-9])")),
    ("Slack token", re.compile(r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}")),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    # key = value assignments (code, .env files, JSON): a long value with at least one digit, so an
    # identifier such as ``api_key=read_the_key_from_the_environment`` is not flagged.
    ("credential assignment", re.compile(
        r"(?i)\b(?:api[_-]?key|api[_-]?token|access[_-]?token|auth[_-]?token|secret[_-]?key|client[_-]?secret"
        r"|password|passwd|hf[_-]?token|wandb[_-]?api[_-]?key)[\"']?\s*[:=]\s*[\"']?"
        r"(?=[A-Za-z0-9_\-+/]*[0-9])(?=[A-Za-z0-9_\-+/]*[A-Za-z])[A-Za-z0-9_\-+/]{20,}"
    )),
)


def mask(secret: str) -> str:
    """Enough of a match to find it, never enough to use it."""
    return secret[:6] + "…" if len(secret) > 6 else "…"


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, masked match) for every secret-shaped string in ``text``."""
    found = []
    for kind, pattern in _SECRET_PATTERNS:
        for m in pattern.finditer(text):
            found.append((kind, mask(m.group(0))))
    return found


def find_abs_paths(text: str) -> list[str]:
    """Absolute machine paths in ``text`` (shortened to their first two components)."""
    out = []
    for m in _ABS_PATH_RE.finditer(text):
        parts = re.split(r"[\\/]+", m.group(0))
        out.append("/".join(parts[:3]) + ("/…" if len(parts) > 3 else ""))
    return out


# ----------------------------------------------------------------------------- checks
def _strings(obj, where: str) -> Iterator[tuple[str, str]]:
    """Every string (keys included) in a JSON value, with a short description of where it is."""
    if isinstance(obj, str):
        yield where, obj
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item, where)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield where, str(key)
            yield from _strings(value, where)


def _places(nb: dict) -> Iterator[tuple[str, str]]:
    for i, cell in enumerate(nb.get("cells", [])):
        for key, value in cell.items():
            yield from _strings(value, f"cell {i} {key}")
    for key, value in nb.items():
        if key != "cells":
            yield from _strings(value, key)


def source_for(notebook: Path) -> Path | None:
    """``notebooks/_sources/<stem>.py`` of a notebook, if its folder has sources at all."""
    sources = notebook.parent / "_sources"
    if not sources.is_dir():
        return None
    return sources / f"{notebook.stem}.py"


def check_notebook(path: Path) -> list[str]:
    """Every reason ``path`` may not be committed as it is (empty: clean)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not valid JSON (line {exc.lineno}): rebuild it with `python -m workshop_utils.tooling.nbbuild`"]
    problems: list[str] = []

    cells = nb.get("cells", []) if isinstance(nb, dict) else []
    with_outputs = [i for i, c in enumerate(cells) if c.get("outputs")]
    with_counts = [i for i, c in enumerate(cells) if c.get("execution_count") is not None]
    if with_outputs:
        problems.append(f"outputs in {len(with_outputs)} cell(s) (first: cell {with_outputs[0]}): "
                        "run `python -m workshop_utils.tooling.nbclean notebooks`")
    if with_counts:
        problems.append(f"execution counts in {len(with_counts)} cell(s) (first: cell {with_counts[0]}): "
                        "run `python -m workshop_utils.tooling.nbclean notebooks`")

    seen: set[tuple[str, str]] = set()
    for where, value in _places(nb if isinstance(nb, dict) else {}):
        for found in find_abs_paths(value):
            if (where, found) not in seen:
                seen.add((where, found))
                problems.append(f"absolute machine path {found!r} in {where}: print paths with paths.display_path")
        for kind, masked in find_secrets(value):
            if (where, masked) not in seen:
                seen.add((where, masked))
                problems.append(f"{kind}-shaped string {masked!r} in {where}: remove it and revoke it if it is real")

    src = source_for(path)
    if src is not None:
        if not src.is_file():
            problems.append(f"no source {src.parent.name}/{src.name}: notebooks are built from notebooks/_sources")
        else:
            from .nbbuild import build

            try:
                built = build(src)
            except ValueError as exc:
                problems.append(f"its source {src.name} does not parse ({exc})")
            else:
                if built != text:
                    problems.append(f"out of sync with _sources/{src.name}: run `python -m workshop_utils.tooling.nbbuild`")
    return problems


def notebooks_in(targets: list[Path]) -> list[Path]:
    found: list[Path] = []
    for target in targets:
        if target.is_dir():
            found.extend(p for p in sorted(target.glob("*.ipynb")))
        elif target.suffix == ".ipynb":
            found.append(target)
    return found


def orphan_sources(targets: list[Path]) -> list[str]:
    """Sources in ``<dir>/_sources`` whose notebook was never built."""
    from .nbbuild import notebook_sources

    problems = []
    for target in targets:
        sources = target / "_sources"
        if target.is_dir() and sources.is_dir():
            for src in notebook_sources(sources):
                if not (target / f"{src.stem}.ipynb").exists():
                    problems.append(f"{target.name}/{src.stem}.ipynb: missing, but _sources/{src.name} exists: "
                                    "run `python -m workshop_utils.tooling.nbbuild`")
    return problems


# What nbstripout's command line strips by default besides outputs and counts (run metadata, widget state).
STRIPPED_METADATA = [
    "metadata.signature", "metadata.widgets", "cell.metadata.collapsed", "cell.metadata.ExecuteTime",
    "cell.metadata.execution", "cell.metadata.heading_collapsed", "cell.metadata.hidden", "cell.metadata.scrolled",
]


def clean_notebook(path: Path) -> bool:
    """Strip outputs, execution counts and run metadata in place with nbstripout; True when the file changed.

    The notebook is written back in nbbuild's layout (one-space indent, keys in their order), so a clean
    notebook stays byte-identical to the one built from its source."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    import nbformat
    from nbstripout import strip_output

    nb = nbformat.from_dict(json.loads(text))
    strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=STRIPPED_METADATA)
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


def _shown(path: Path) -> str:
    from ..paths import display_path

    return display_path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workshop_utils.tooling.nbclean",
        description="check (or strip) notebooks before committing: outputs, execution counts, machine paths, secrets, sync with sources",
    )
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when a notebook is not clean")
    parser.add_argument("targets", nargs="*", default=["notebooks"], help="folders or .ipynb files (default: notebooks)")
    args = parser.parse_args(argv)
    targets = [Path(t) for t in args.targets]
    missing = [t for t in targets if not t.exists()]
    if missing:
        print(f"error: {', '.join(map(str, missing))} not found: pass the notebooks folder or .ipynb files", file=sys.stderr)
        return 2

    notebooks = notebooks_in(targets)
    if not args.check:
        for nb in notebooks:
            try:
                if clean_notebook(nb):
                    print("cleaned", _shown(nb))
            except json.JSONDecodeError:
                pass  # reported below

    problems = [f"{_shown(nb)}: {reason}" for nb in notebooks for reason in check_notebook(nb)]
    problems += orphan_sources(targets)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(notebooks)} notebook(s)", file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(notebooks)} notebook(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
