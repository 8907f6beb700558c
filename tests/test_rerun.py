"""Rerun and restart: every notebook runs alone in a fresh kernel, and twice in a row gives the same numbers.

For each notebook in ``notebooks/`` (whatever exists when the tests run), in order:

(a) **alone**: a fresh kernel, an EMPTY outputs folder (``WORKSHOP_OUTPUTS`` -> tmp), profile smoke.
    The notebook either passes, or stops at the cell that needs an earlier artefact with a
    ``MissingArtifactError`` whose message is one sentence naming the notebook or command to run first.
(b) **twice in a row**: two runs in the same outputs folder both pass and record the same metrics in
    ``results.json`` (timings and memory excluded, floats to 1e-6).

To keep CI cheap, (a)'s run is reused as (b)'s first run whenever the notebook passes alone: it then
runs once more in the same folder, and what it made is copied into a shared "chain" folder that later
notebooks read. A notebook that stops early in (a) (cheap: it stops at its first artefact) runs twice
in the chain folder instead. Each notebook thus executes fully exactly twice.
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

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
PROFILE = "smoke"
CELL_TIMEOUT = 600  # seconds per cell; smoke cells take seconds to a couple of minutes on 2 cores
# Files a Trainer checkpoint writes that are not model weights (the weights are safetensors).
NON_WEIGHT_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "training_args.bin"}
# Entries that legitimately change from run to run.
# (throughput tables use keys such as "samples/s" and "ms/sample")
VOLATILE = re.compile(r"(^_updated$|seconds|per_second|/s$|^ms/|memory|_bytes$|^elapsed|time$|^date)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


# ----------------------------------------------------------------------------- running notebooks
class Run:
    def __init__(self, name: str, outputs: Path):
        self.name, self.outputs = name, outputs
        self.ok = False
        self.ename = self.evalue = None
        self.failed_cell: int | None = None
        self.code_cells = 0
        self.seconds = 0.0

    @property
    def results_path(self) -> Path:
        return self.outputs / PROFILE / "results.json"

    def results(self) -> dict:
        return json.loads(self.results_path.read_text()) if self.results_path.exists() else {}

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
    # the profile cell, then the cell that checks what the notebook needs: nothing runs before the stop
    assert run.failed_cell is not None and run.failed_cell <= 1, f"{run}: must stop at its first cells, before any work"
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


def merge_into(src: Path, chain: Path) -> None:
    """Copy what a notebook made alone into the chain folder, as if it had run there."""
    src_profile, chain_profile = src / PROFILE, chain / PROFILE
    chain_profile.mkdir(parents=True, exist_ok=True)
    if not src_profile.is_dir():  # the notebook wrote nothing (e.g. 00_setup)
        return
    for item in src_profile.iterdir():
        if item.name == "results.json" or item.name.startswith(".results."):
            continue
        if item.is_dir():
            shutil.copytree(item, chain_profile / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, chain_profile / item.name)
    new = src_profile / "results.json"
    if new.exists():
        text = new.read_text().replace(str(src), str(chain))  # recorded paths now point into the chain
        merged = json.loads((chain_profile / "results.json").read_text()) if (chain_profile / "results.json").exists() else {}
        merged.update(json.loads(text))
        (chain_profile / "results.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """One outputs folder the notebooks share in order, like an attendee running the series."""
    return tmp_path_factory.mktemp("chain")


def test_found_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].stem.startswith("00_")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_alone_then_twice_in_a_row(notebook, chain, tmp_path):
    # Read once: every run executes the same text even if the file is rebuilt meanwhile.
    text = notebook.read_text(encoding="utf-8")
    # (a) alone, in a fresh kernel, with an empty outputs folder
    alone = execute(notebook, tmp_path / "alone", text)
    if alone.ok:
        first, folder = alone.results(), alone.outputs
        # (b) the second run in the same folder
        again = execute(notebook, folder, text)
        assert again.ok, f"second run in the same folder failed: {again}"
        second = again.results()
        no_pickled_weights(folder)
        merge_into(folder, chain)
    else:
        one_sentence_run_first(alone)
        # (b) in the chain folder, where the earlier notebooks left what this one needs
        first_run = execute(notebook, chain, text)
        assert first_run.ok, f"fails even after the earlier notebooks ran: {first_run}"
        first = first_run.results()
        again = execute(notebook, chain, text)
        assert again.ok, f"second run in the same folder failed: {again}"
        second = again.results()
        no_pickled_weights(chain)
    diffs = differences(stable(first), stable(second))
    assert not diffs, f"{notebook.name}: the second run recorded different numbers:\n" + "\n".join(diffs)
