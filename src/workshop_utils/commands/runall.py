"""`workshop run-all`: execute every notebook in order, headless, and write a one-page summary.

    workshop run-all                     notebooks/NN_*.ipynb in order, in the active profile
    workshop run-all --only 02 --only 04 a subset (by number prefix)
    workshop run-all --output-dir DIR    where the executed copies and the summary go

Each notebook runs in a fresh kernel started from *this* interpreter (so the venv that runs the
command is the one the notebooks use), with the profile passed on through ``WORKSHOP_PROFILE``.
The summary (``summary.md`` and a self-contained ``summary.html``) holds the profile table, every
before/after pair from the results record with a bar chart per pair group, the figures the notebooks
displayed, and the wall time of each notebook. When a cell fails the command stops, names the
notebook, the cell (index and first line) and the error's last line, and exits 1.
"""

from __future__ import annotations

import base64
import html
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import WorkshopError

NOTEBOOK_RE = re.compile(r"^(\d\d)_.+\.ipynb$")


# --------------------------------------------------------------------------- arguments
def add_arguments(parser) -> None:
    parser.add_argument("--only", action="append", default=[], metavar="NN",
                        help="run only notebooks whose number is NN (repeat, or comma-separate: --only 02,04)")
    parser.add_argument("--notebooks-dir", default=None, metavar="DIR",
                        help="folder holding the NN_*.ipynb notebooks (default: notebooks/)")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="where executed copies and the summary go (default: outputs/<profile>/run-all/<timestamp>/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow writing into an --output-dir that already holds a previous run")
    parser.add_argument("--timeout", type=int, default=1800, metavar="S",
                        help="seconds one cell may run before the run is stopped (default: 1800)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# --------------------------------------------------------------------------- records
@dataclass
class NotebookRun:
    name: str
    seconds: float = 0.0
    cells: int = 0
    status: str = "not run"  # "ok", "failed", "not run"
    failure: str | None = None
    images: list[Path] = field(default_factory=list)


def select_notebooks(folder: Path, only: list[str]) -> list[Path]:
    if not folder.is_dir():
        raise WorkshopError(f"{folder}: no such notebooks folder; pass --notebooks-dir DIR")
    wanted = {part.strip().zfill(2) for item in only for part in item.split(",") if part.strip()}
    found = sorted(p for p in folder.iterdir() if p.is_file() and NOTEBOOK_RE.match(p.name))
    if wanted:
        unknown = wanted - {NOTEBOOK_RE.match(p.name).group(1) for p in found}
        if unknown:
            raise WorkshopError(
                f"--only {', '.join(sorted(unknown))}: no such notebook in {folder} "
                f"(have: {', '.join(p.name[:2] for p in found) or 'none'})"
            )
        found = [p for p in found if NOTEBOOK_RE.match(p.name).group(1) in wanted]
    if not found:
        raise WorkshopError(f"{folder}: no NN_*.ipynb notebooks to run; build them with `python -m workshop_utils.tooling.nbbuild`")
    return found


def choose_output_dir(requested: str | None, profile_name: str, overwrite: bool) -> Path:
    """A folder for this run; never silently mixes with a previous run's files."""
    if requested is None:
        from ..paths import outputs_dir

        base = outputs_dir(profile_name) / "run-all"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = base / stamp
        n = 1
        while out.exists():  # two runs in the same second
            n += 1
            out = base / f"{stamp}-{n}"
    else:
        out = Path(requested).expanduser()
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise WorkshopError(
                f"{out} already holds a previous run: pass --overwrite to replace it, or choose another --output-dir"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:100]
    return "(empty cell)"


def last_line(text: str) -> str:
    lines = [l.strip() for l in _strip_ansi(text).splitlines() if l.strip()]
    return lines[-1][:300] if lines else ""


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text or "")


def _kernel_manager():
    """A kernel manager whose ``python3`` kernel is this very interpreter (ipykernel's native spec)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # kernel_dirs=[] hides any user- or system-wide "python3" kernelspec that might point to another
    # Python; the native spec ipykernel provides runs sys.executable.
    ksm = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def execute_notebook(path: Path, executed_dir: Path, figures_dir: Path, timeout: int, progress: bool,
                     env: dict[str, str] | None = None) -> NotebookRun:
    """Run one notebook cell by cell in a fresh kernel; write the executed copy even when it fails."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from tqdm.auto import tqdm

    nb = nbformat.read(path, as_version=4)
    run = NotebookRun(name=path.stem)
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    start = time.perf_counter()
    bar = tqdm(total=len(code_cells), desc=path.stem[:40], unit="cell", disable=not progress, file=sys.stderr)
    current = None
    try:
        with client.setup_kernel(cleanup_kc=True, env=dict(os.environ if env is None else env)):
            for index, cell in code_cells:
                current = (index, cell)
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                run.cells += 1
                bar.update(1)
        run.status = "ok"
    except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as exc:
        run.status = "failed"
        index, cell = current if current else (0, nb.cells[0] if nb.cells else {"source": ""})
        if isinstance(exc, CellExecutionError):
            why = f"{exc.ename}: {exc.evalue}" if exc.ename else last_line(str(exc))
            why = last_line(why) if "\n" in why else why
        elif isinstance(exc, CellTimeoutError):
            why = f"the cell ran longer than --timeout {timeout} s"
        else:
            why = f"{exc.__class__.__name__}: {last_line(str(exc))}"
        run.failure = f"cell {index} (`{first_line(cell['source'])}`): {_strip_ansi(why)}"
    finally:
        bar.close()
        run.seconds = time.perf_counter() - start
        executed_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_dir / path.name)
        run.images = extract_images(nb, figures_dir, path.stem)
    return run


def extract_images(nb, figures_dir: Path, stem: str) -> list[Path]:
    """PNG images the notebook displayed (plots), saved as files for the summary."""
    out = []
    for index, cell in enumerate(nb.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
            png = data.get("image/png")
            if png:
                figures_dir.mkdir(parents=True, exist_ok=True)
                target = figures_dir / f"{stem}-cell{index:03d}-{k}.png"
                target.write_bytes(base64.b64decode(png if isinstance(png, str) else "".join(png)))
                out.append(target)
    return out


def before_after_figures(pairs: list[dict], figures_dir: Path) -> list[tuple[str, Path]]:
    """One grouped-bar chart per (notebook, what) in the results record."""
    from ..plots import _plt, before_after

    groups: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for p in pairs:
        g = groups.setdefault((p["notebook"], p["what"]), {"before": {}, "after": {}})
        g["before"][p["metric"]] = p["before"]
        g["after"][p["metric"]] = p["after"]
    figs = []
    for (notebook, what), scores in groups.items():
        target = figures_dir / f"before-after-{notebook}-{what}.png"
        fig = before_after(scores, title=f"{notebook} · {what}", save_to=target)
        _plt().close(fig)
        figs.append((f"{notebook} · {what}", target))
    return figs


# --------------------------------------------------------------------------- summary
def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_summary(out: Path, profile, runs: list[NotebookRun], pairs: list[dict], ba_figs, total_s: float) -> tuple[Path, Path]:
    from ..paths import display_path, write_atomic
    from ..tables import markdown_table

    title = f"Workshop run-all: profile '{profile.name}'"
    when = time.strftime("%Y-%m-%d %H:%M")
    ok = all(r.status == "ok" for r in runs)
    verdict = "all notebooks ran" if ok else "FAILED: " + "; ".join(f"{r.name} {r.failure}" for r in runs if r.status == "failed")

    md = [f"# {title}", "", f"{when} · total wall time {total_s:.0f} s · {verdict}", "", "## Profile", "",
          markdown_table(("setting", "value"), [(k, _md_cell(v)) for k, v in profile.table_rows()])]
    md += ["", "## Notebooks", "", markdown_table(("notebook", "status", "cells run", "wall time (s)"), [
        (r.name, f"{r.status}{' — ' + _md_cell(r.failure) if r.failure else ''}", r.cells, f"{r.seconds:.1f}") for r in runs])]
    md += ["", "## Before and after", ""]
    if pairs:
        md.append(markdown_table(("notebook", "what", "metric", "before", "after", "change"), [
            (p["notebook"], p["what"], p["metric"], _fmt(p["before"]), _fmt(p["after"]), f"{p['after'] - p['before']:+.3f}")
            for p in pairs]))
        md.append("")
        md += [f"![{label}](figures/{path.name})" for label, path in ba_figs]
    else:
        md.append("No before/after pairs in the results record yet.")
    md += ["", "## Figures from the notebooks", ""]
    shown = [(r.name, img) for r in runs for img in r.images]
    md += [f"**{name}**  \n![{name}](figures/{img.name})" for name, img in shown] or ["No figures."]
    md += ["", f"Executed notebooks: `{display_path(out / 'executed')}`", ""]
    md_path = out / "summary.md"
    write_atomic(md_path, "\n".join(md))

    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}figure{display:inline-block;margin:.5em}"
        "img{max-width:28em}.failed{color:#b00}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='{'ok' if ok else 'failed'}'>{html.escape(when)} · total wall time {total_s:.0f} s · {html.escape(verdict)}</p>",
        "<h2>Profile</h2>", _html_table(("setting", "value"), profile.table_rows()),
        "<h2>Notebooks</h2>",
        _html_table(("notebook", "status", "cells run", "wall time (s)"),
              [(r.name, r.status + (f" — {r.failure}" if r.failure else ""), r.cells, f"{r.seconds:.1f}") for r in runs]),
        "<h2>Before and after</h2>",
    ]
    if pairs:
        parts.append(_html_table(("notebook", "what", "metric", "before", "after", "change"),
                           [(p["notebook"], p["what"], p["metric"], _fmt(p["before"]), _fmt(p["after"]), f"{p['after'] - p['before']:+.3f}") for p in pairs]))
        parts += [_img_tag(path, label) for label, path in ba_figs]
    else:
        parts.append("<p>No before/after pairs in the results record yet.</p>")
    parts.append("<h2>Figures from the notebooks</h2>")
    parts += [_img_tag(img, name) for name, img in shown] or ["<p>No figures.</p>"]
    parts.append("</body></html>")
    html_path = out / "summary.html"
    write_atomic(html_path, "\n".join(parts))
    return md_path, html_path


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- command
def run(args) -> int:
    from ..paths import display_path, repo_root
    from ..profiles import active_profile
    from ..results import Results

    profile = active_profile()
    # every kernel gets this environment with the profile pinned, so all notebooks (and the summary)
    # agree even when the profile was detected rather than forced
    kernel_env = {**os.environ, "WORKSHOP_PROFILE": profile.name}
    nb_dir = Path(args.notebooks_dir).expanduser() if args.notebooks_dir else repo_root() / "notebooks"
    notebooks = select_notebooks(nb_dir, args.only)
    out = choose_output_dir(args.output_dir, profile.name, args.overwrite)
    figures = out / "figures"
    progress = not args.no_progress
    print(f"run-all: {len(notebooks)} notebook(s) in profile '{profile.name}' -> {display_path(out)}", flush=True)

    runs = [NotebookRun(name=p.stem) for p in notebooks]
    t0 = time.perf_counter()
    for i, path in enumerate(notebooks):
        runs[i] = execute_notebook(path, out / "executed", figures, args.timeout, progress, kernel_env)
        r = runs[i]
        print(f"  {r.name}: {r.status} in {r.seconds:.1f} s", flush=True)
        if r.status != "ok":
            break
    total = time.perf_counter() - t0

    pairs = Results.for_profile(profile).before_after_pairs()
    ba_figs = before_after_figures(pairs, figures) if pairs else []
    md_path, html_path = write_summary(out, profile, runs, pairs, ba_figs, total)
    print(f"summary: {display_path(md_path)} and {display_path(html_path)} (total {total:.0f} s)")
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        r = failed[0]
        print(f"FAILED: {display_path(nb_dir / (r.name + '.ipynb'))}, {r.failure}", file=sys.stderr)
        return 1
    return 0
