"""Checking the time estimates against this machine (development tooling, not imported by the notebooks).

    python -m workshop_utils.tooling.estimates_check --probe [--runs 5]   this machine's probe figures (fresh), beside the reference's
    python -m workshop_utils.tooling.estimates_check --check SUMMARY       measured / estimated per notebook of a `workshop run-all`
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..estimates import REFERENCE_PROBE, calibration, series_estimate

# --------------------------------------------------------------------------- checking against a run
CHECK_BAND = 1.5  # the target: each notebook's estimate within 1.5x of its measured time


def read_run_summary(path: str | os.PathLike) -> tuple[str, dict[str, float]]:
    """(profile, {notebook: seconds}) of the notebooks that ran to the end, from `workshop run-all`'s
    summary.md (or its folder; a ``run-all/`` folder of several runs: the latest)."""
    from .. import WorkshopError

    p = Path(path).expanduser()
    if p.is_dir():
        runs = [p / "summary.md"] if (p / "summary.md").is_file() else sorted(p.glob("*/summary.md"))
        if not runs:
            raise WorkshopError(f"{p}: no summary.md here or one folder down; pass the summary.md `workshop run-all` wrote")
        p = runs[-1]
    if not p.is_file():
        raise WorkshopError(f"{p}: no such file; pass the summary.md of a `workshop run-all` (outputs/<profile>/run-all/...)")
    profile, seconds = "", {}
    for line in p.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in _split_row(line)]
        if len(cells) == 2 and cells[0] == "profile":
            profile = cells[1]
        elif len(cells) == 4 and cells[0][:2].isdigit() and cells[1] == "ok":
            seconds[cells[0]] = float(cells[3])
    if not profile or not seconds:
        raise WorkshopError(f"{p}: no profile row or no notebook that ran ok; is this a `workshop run-all` summary.md?")
    return profile, seconds


def _split_row(line: str) -> list[str]:
    if not (line.startswith("|") and line.rstrip().endswith("|")):
        return []
    cells, cell, escaped = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "|" and not escaped:
            cells.append(cell)
            cell = ""
        else:
            cell += ch
        escaped = ch == "\\"
    return cells + [cell]


def check_run(path: str | os.PathLike) -> list[tuple[str, float, float, float]]:
    """(notebook, measured s, estimated s, measured / estimated) for each notebook of a run-all summary,
    estimated on this machine (run it with the same ``taskset`` as the run)."""
    from ..profiles import make_profile

    name, measured = read_run_summary(path)
    est = series_estimate(make_profile(name, "--check", cuda=name == "gpu", hub=name in ("cpu", "gpu")))
    return [(nb, sec, est.per_notebook[nb], sec / est.per_notebook[nb]) for nb, sec in measured.items()
            if nb in est.per_notebook]


def _print_check(path: str) -> int:
    rows = check_run(path)
    print(f"{'notebook':28} {'measured':>9} {'estimated':>9}  measured/estimated")
    for nb, sec, est, ratio in rows:
        ok = 1 / CHECK_BAND <= ratio <= CHECK_BAND
        print(f"{nb:28} {sec:8.1f}s {est:8.1f}s  {ratio:5.2f}  {'ok' if ok else f'OUTSIDE {CHECK_BAND}x'}")
    inside = sum(1 / CHECK_BAND <= r <= CHECK_BAND for *_, r in rows)
    total = sum(r[1] for r in rows) / sum(r[2] for r in rows)
    print(f"{inside} of {len(rows)} notebooks within {CHECK_BAND}x; whole series measured/estimated {total:.2f}")
    print(calibration().line())
    return 0 if inside == len(rows) else 1


def _print_probe(runs: int) -> None:
    from .. import estimates_probe

    import torch

    busy, load = estimates_probe.machine_busy()
    probes = [estimates_probe.run_probe() for _ in range(runs)]
    with torch.no_grad():  # the size docs/benchmarks.md quotes beside its figures, for comparison
        big = estimates_probe._matmul_gflops(torch, [(2048, 2048, 2048)], 0.5)
    print(f"fingerprint: {estimates_probe.fingerprint()}\nload average before: {load:.2f}{' (busy)' if busy else ''}")
    print(f"matmul 2048^3 fp32: {big:.1f} GFLOP/s (once, after the probes)")
    medians = {}
    for key in estimates_probe.FIGURES:
        values = sorted(p[key] for p in probes)
        medians[key] = round(values[len(values) // 2], 2)
        ref = REFERENCE_PROBE[key]
        print(f"{key:16} median {medians[key]:8.2f}  (runs: {', '.join(f'{v:.2f}' for v in values)})"
              + (f"  reference {ref:.2f}" if ref else ""))
    print(f"to record this machine as the reference (idle machine only): REFERENCE_PROBE = {medians}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .. import WorkshopError

    parser = argparse.ArgumentParser(prog="python -m workshop_utils.tooling.estimates_check", description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true", help="run the calibration probe afresh and print its figures")
    parser.add_argument("--runs", type=int, default=1, help="with --probe: probes to run (the median is printed)")
    parser.add_argument("--check", metavar="SUMMARY", help="a `workshop run-all` summary.md (or its folder)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        if args.check:
            return _print_check(args.check)
        if args.probe:
            _print_probe(args.runs)
            return 0
    except WorkshopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
