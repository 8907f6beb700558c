"""Where a `workshop run-all` spent its time: per notebook, seconds of training, scoring, loading and the rest.

    python scripts/series_breakdown.py outputs/offline/run-all/<time>            one run
    python scripts/series_breakdown.py BEFORE AFTER                               two runs side by side

Reads the executed notebooks in ``<run>/executed/`` (nbclient stores when each cell started and ended) and puts
each code cell in one kind, by what its source calls, first match wins:

* **training**: ``.train()``;
* **scoring**: the model answers or is scored (``score_chat_model``, ``score_systems``, ``answer_twice``,
  ``pair_logprobs``, ``answer_nll``, ``generate(``, ``predict(``, ``evaluate(``, a ``pipeline`` call on data);
* **loading**: a model is loaded (``from_pretrained``, ``load_model``, ``load_sft_model``, ``pipeline(``);
* **other**: data, plots, saving, checks.

A cell that loads a model and then scores counts as scoring (loading SmolLM2 takes a few seconds; the cell's
own output says so when it matters). ``--cells N`` also lists each notebook's N slowest cells.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path

KINDS = (
    ("training", re.compile(r"\.train\(\)")),
    ("scoring", re.compile(r"score_chat_model\(|score_systems\(|answer_twice\(|pair_logprobs\(|answer_nll\w*\(|"
                           r"\bgenerate\(|\.predict\(|\.evaluate\(|evaluate_pairs\(|chat_demo\(|classifier\(")),
    ("loading", re.compile(r"from_pretrained\(|load_model\(|load_sft_model\(|\bpipeline\(")),
)
COLUMNS = ("training", "scoring", "loading", "other")


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def cells(path: Path) -> list[tuple[str, float, int, str]]:
    """(kind, seconds, index, first code line) of every executed code cell."""
    notebook = json.loads(path.read_text())
    out = []
    for index, cell in enumerate(notebook["cells"]):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] != "code" or "shell.execute_reply" not in timing:
            continue
        seconds = (_time(timing["shell.execute_reply"]) - _time(timing["iopub.execute_input"])).total_seconds()
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
        kind = next((name for name, pattern in KINDS if pattern.search(code)), "other")
        first = next((line.strip() for line in code.splitlines() if line.strip()), "")
        out.append((kind, seconds, index, first[:100]))
    return out


def breakdown(run: Path) -> dict[str, dict[str, float]]:
    folder = run / "executed"
    if not folder.is_dir():
        raise SystemExit(f"{run}: no executed/ folder; pass the folder `workshop run-all` wrote")
    table = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        sums = dict.fromkeys(COLUMNS, 0.0)
        for kind, seconds, _, _ in cells(path):
            sums[kind] += seconds
        table[path.stem] = sums
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one or two `workshop run-all` output folders")
    parser.add_argument("--cells", type=int, default=0, metavar="N", help="also list each notebook's N slowest cells")
    args = parser.parse_args(argv)
    tables = [breakdown(run) for run in args.runs]
    names = sorted(set().union(*tables))
    heads = [f"{c} (s)" for c in COLUMNS] + ["total (s)"]
    if len(tables) == 2:
        heads = [f"{c}: before / after" for c in (*COLUMNS, "total")]
    print("| notebook | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    totals = [dict.fromkeys((*COLUMNS, "total"), 0.0) for _ in tables]
    for name in names:
        row = []
        for column in (*COLUMNS, "total"):
            values = []
            for table, total in zip(tables, totals):
                sums = table.get(name, dict.fromkeys(COLUMNS, 0.0))
                value = sum(sums.values()) if column == "total" else sums[column]
                total[column] += value
                values.append(f"{value:.0f}")
            row.append(" / ".join(values))
        print(f"| {name} | " + " | ".join(row) + " |")
    print("| **series** | " + " | ".join(" / ".join(f"{t[c]:.0f}" for t in totals) for c in (*COLUMNS, "total")) + " |")
    if args.cells:
        for run in args.runs:
            print(f"\n{run}:")
            for path in sorted((run / "executed").glob("[0-9][0-9]_*.ipynb")):
                slow = sorted(cells(path), key=lambda c: -c[1])[:args.cells]
                print(f"  {path.stem}: " + "; ".join(f"cell {i} {k} {s:.0f} s `{f[:60]}`" for k, s, i, f in slow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
