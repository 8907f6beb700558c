"""Rerun and restart: every notebook runs alone in a fresh kernel, and again over its own outputs with the same numbers.

(a) **alone** (``test_alone``, in order): a fresh kernel, an EMPTY outputs folder (``WORKSHOP_OUTPUTS`` ->
    tmp), profile smoke. The notebook either passes, or stops at the cell that needs an earlier artefact with
    a ``MissingArtifactError`` whose message is one sentence naming the notebook or command to run first.
    What a notebook made alone is copied into the series folder (``NotebookSeries`` in ``conftest.py``), as
    if it had run there; a notebook that stopped early runs there instead, after the earlier notebooks.
(b) **again over its own outputs**: nbval then executes the series in that folder (``make test`` runs
    ``pytest tests notebooks --nbval-lax``), so each notebook runs a second time in a folder where its first
    run left checkpoints, models and records. ``test_second_run_records_the_same_numbers`` runs after nbval:
    every cell passed, no pickled weights, and ``results.json`` holds the same metrics as after the first runs
    (timings and memory excluded, floats to 1e-6). Without nbval in the session (``make test-rerun``) it
    executes the series itself.

Each notebook thus executes fully twice in ``make test``, and nbval's run is one of the two.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
SHIPPED = {p.name for p in NB_DIR.iterdir()}  # what the folder held before any notebook ran
PROFILE = "smoke"
CELL_TIMEOUT = 600  # seconds per cell; smoke cells take seconds to a couple of minutes on 2 cores
# Files a Trainer checkpoint writes that are not model weights (the weights are safetensors).
NON_WEIGHT_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "training_args.bin"}
# Entries that legitimately change from run to run.
# (throughput tables use keys such as "samples/s" and "ms/sample")
VOLATILE = re.compile(r"(^_updated$|seconds|per_second|/s$|^ms/|memory|_bytes$|^elapsed|time$|^date)")

pytestmark = [pytest.mark.timeout(3600)]


# ----------------------------------------------------------------------------- running notebooks
def read_record(outputs: Path) -> dict:
    """The results record a run writing to ``outputs`` left (empty when it recorded nothing)."""
    path = outputs / PROFILE / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


class Run:
    def __init__(self, name: str, outputs: Path):
        self.name, self.outputs = name, outputs
        self.ok = False
        self.ename = self.evalue = None
        self.failed_cell: int | None = None
        self.code_cells = 0
        self.seconds = 0.0

    def __repr__(self) -> str:
        state = "passed" if self.ok else f"{self.ename} at code cell {self.failed_cell}/{self.code_cells}: {self.evalue}"
        return f"{self.name} in {self.outputs.name}: {state} ({self.seconds:.0f} s)"


def execute(notebook: Path, outputs: Path, text: str) -> Run:
    """Run ``notebook`` (its JSON ``text``) top to bottom in a fresh python3 kernel writing to ``outputs``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    outputs.mkdir(parents=True, exist_ok=True)
    nb = nbformat.reads(text, as_version=4)
    env = dict(os.environ, WORKSHOP_OUTPUTS=str(outputs), WORKSHOP_PROFILE=PROFILE, HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg")
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(NB_DIR)}})
    run = Run(notebook.stem, outputs)
    code = [c for c in nb.cells if c.cell_type == "code"]
    run.code_cells = len(code)
    start = time.perf_counter()
    try:
        client.execute(env=env)
        run.ok = True
    except CellExecutionError as exc:
        run.ename, run.evalue = exc.ename, exc.evalue
        run.failed_cell = next((i for i, c in enumerate(code)
                                if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    run.seconds = time.perf_counter() - start
    print(run)
    return run


# ----------------------------------------------------------------------------- comparing records
def stable(obj):
    """The record without entries that change from run to run (timings, memory, timestamps)."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if not VOLATILE.search(str(k))}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def differences(a, b, where="results") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in {'first' if k in a else 'second'} run" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=0, abs_tol=1e-6) else [f"{where}: {a!r} then {b!r}"]
    return [] if a == b else [f"{where}: {a!r} then {b!r}"]


# ----------------------------------------------------------------------------- checks
def one_sentence_run_first(run: Run) -> None:
    """The error a notebook run alone may stop with: MissingArtifactError, one sentence, names the maker."""
    assert run.ename == "MissingArtifactError", f"{run}: a notebook run alone may only stop for a missing artefact"
    # the Colab cell (nothing outside Colab), the profile cell, then the cell that checks what the notebook
    # needs: nothing runs before the stop
    assert run.failed_cell is not None and run.failed_cell <= 2, f"{run}: must stop at its first cells, before any work"
    msg = run.evalue.strip()
    assert "\n" not in msg, f"{run.name}: the message must be one line: {msg!r}"
    assert not re.search(r"[.!?]\s+[A-Z]", msg), f"{run.name}: the message must be one sentence: {msg!r}"
    assert re.search(r"\brun\b.+\bfirst\b", msg), f"{run.name}: the message must say what to run first: {msg!r}"
    makers = re.findall(r"notebooks/(\d\d_[\w-]+)\.ipynb", msg)
    commands = re.findall(r"`workshop ([\w-]+)", msg)
    assert makers or commands, f"{run.name}: the message must name a notebook or `workshop` command: {msg!r}"
    for maker in makers:
        assert (NB_DIR / f"{maker}.ipynb").exists(), f"{run.name}: {msg!r} names a notebook that does not exist"
        assert maker < run.name, f"{run.name}: {msg!r} names a later notebook"


def no_pickled_weights(folder: Path) -> None:
    bad = [str(p.relative_to(folder)) for p in folder.rglob("*")
           if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl") and p.name not in NON_WEIGHT_PICKLES]
    assert not bad, f"weights must be safetensors: {bad}"


def merge_into(src: Path, series: Path) -> None:
    """Copy what a notebook made alone into the series folder, as if it had run there."""
    src_profile, series_profile = src / PROFILE, series / PROFILE
    series_profile.mkdir(parents=True, exist_ok=True)
    if not src_profile.is_dir():  # the notebook wrote nothing (e.g. 00_setup)
        return
    for item in src_profile.iterdir():
        if item.name == "results.json" or item.name.startswith(".results."):
            continue
        if item.is_dir():
            shutil.copytree(item, series_profile / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, series_profile / item.name)
    new = src_profile / "results.json"
    if new.exists():
        text = new.read_text().replace(str(src), str(series))  # recorded paths now point into the series
        merged = read_record(series)
        merged.update(json.loads(text))
        (series_profile / "results.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def test_found_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].stem.startswith("00_")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_alone(notebook, notebook_series, tmp_path):
    series = notebook_series.folder
    # Read once: every run executes the same text even if the file is rebuilt meanwhile.
    text = notebook.read_text(encoding="utf-8")
    # (a) alone, in a fresh kernel, with an empty outputs folder
    alone = execute(notebook, tmp_path / "alone", text)
    if alone.ok:
        no_pickled_weights(alone.outputs)
        merge_into(alone.outputs, series)
    else:
        one_sentence_run_first(alone)
        # in the series folder, where the earlier notebooks left what this one needs
        first = execute(notebook, series, text)
        assert first.ok, f"fails even after the earlier notebooks ran: {first}"
        no_pickled_weights(series)
    notebook_series.first_runs.add(notebook.stem)
    notebook_series.record_before_series = read_record(series)
    # everything a notebook writes goes under the outputs folder: nothing lands beside the notebooks (a tracker's
    # run folder, a checkpoint) where an attendee's copy of the repository would collect it
    strays = sorted(p.name for p in NB_DIR.iterdir() if p.name not in SHIPPED)
    assert not strays, f"{notebook.stem} wrote {strays} into notebooks/ (the kernel's working directory)"


@pytest.mark.after_notebooks
def test_second_run_records_the_same_numbers(notebook_series):
    series = notebook_series.folder
    missing = [p.stem for p in NOTEBOOKS if p.stem not in notebook_series.first_runs]
    assert not missing, f"no first run of {missing}: see test_alone above"
    first = notebook_series.record_before_series
    for notebook in NOTEBOOKS:
        outcome = notebook_series.outcomes.get(notebook.stem)
        if outcome is None:  # nbval did not run it in this session: run it here
            again = execute(notebook, series, notebook.read_text(encoding="utf-8"))
            assert again.ok, f"second run over its own outputs failed: {again}"
            continue
        cells = notebook_series.collected.get(notebook.stem, 0)
        assert outcome["passed"] == cells and not outcome["failed"] and not outcome["skipped"], (
            f"{notebook.name}: nbval's run over its own outputs passed {outcome['passed']} of {cells} cells "
            f"({outcome['failed']} failed, {outcome['skipped']} skipped); outputs kept in {series}")
    no_pickled_weights(series)
    second = read_record(series)
    # every entry is stamped when written: the second runs must have rewritten each one, here
    stale = [name for name, entry in first.items()
             if isinstance(entry, dict) and entry.get("_updated") == second.get(name, {}).get("_updated")]
    assert not stale, f"{stale}: the record in {series} still holds the first run's entries; did nbval write elsewhere?"
    diffs = differences(stable(first), stable(second))
    assert not diffs, f"the second runs recorded different numbers (outputs kept in {series}):\n" + "\n".join(diffs)
