"""scripts/series_breakdown.py sorts each executed cell's time into training / scoring / loading / other."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "series_breakdown.py"


def _cell(source: str, start: str, end: str) -> dict:
    return {"cell_type": "code", "source": source, "outputs": [], "execution_count": 1,
            "metadata": {"execution": {"iopub.execute_input": f"2026-12-06T00:00:{start}Z",
                                       "shell.execute_reply": f"2026-12-06T00:00:{end}Z"}}}


def _run(folder: Path, name: str, cells: list[dict]) -> Path:
    (folder / "executed").mkdir(parents=True, exist_ok=True)
    nb = {"cells": [{"cell_type": "markdown", "source": "# title", "metadata": {}}, *cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (folder / "executed" / name).write_text(json.dumps(nb))
    return folder


def test_two_runs_side_by_side(tmp_path):
    before = _run(tmp_path / "before", "03_sft.ipynb", [
        _cell("model = AutoModelForCausalLM.from_pretrained(path)", "00", "03"),
        _cell("# trainer.train() in a comment is not training\nbefore = score_chat_model(model, tok, q, r)", "03", "40"),
        _cell("with measure('cpu'):\n    trainer.train()", "40", "59"),
        _cell("plots.loss_curve(history)", "59", "59.5"),
    ])
    after = _run(tmp_path / "after", "03_sft.ipynb", [
        _cell("before = score_chat_model(model, tok, q, r)", "00", "01"),
        _cell("trainer.train()", "01", "20"),
    ])
    proc = subprocess.run([sys.executable, str(SCRIPT), str(before), str(after), "--cells", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 03_sft "))
    # training, scoring, loading, other, total: before / after
    assert [c.strip() for c in row.split("|")[2:7]] == ["19 / 19", "37 / 1", "3 / 0", "0 / 0", "60 / 20"]
    assert "cell 2 scoring 37 s" in proc.stdout


def test_a_folder_without_executed_notebooks_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no executed/ folder" in proc.stderr
