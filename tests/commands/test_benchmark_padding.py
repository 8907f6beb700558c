"""scripts/benchmark_padding.py stays runnable and compares what it says it compares.

A tiny run (a few rows, the seed recipe padded to 96 tokens instead of 512) checks the plumbing and the
recipes' padding; the real figures (>= 20x on 2 CPU cores) are in docs/benchmarks.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "benchmark_padding.py"


def test_tiny_benchmark_reports_both_recipes(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--train-rows", "24", "--eval-rows", "16", "--seed-max-length", "96",
         "--skip-grouping", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    project, seed = report["recipes"]["project"], report["recipes"]["seed tutorial"]
    assert report["rows"] == {"train": 24, "validation": 16}
    # the seed recipe pads every row to its fixed length; the project's rows keep their own length
    assert seed["tokens_per_row"] == 96
    assert project["tokens_per_row"] < 96
    assert project["samples_per_second"] > 0 and seed["samples_per_second"] > 0
    assert report["speedup"] == pytest.approx(project["samples_per_second"] / seed["samples_per_second"], rel=0.01)
    assert "speed-up" in proc.stdout and "seed tutorial" in proc.stdout
    for recipe in (project, seed):
        assert 0.0 <= recipe["accuracy"] <= 1.0 and 0.0 <= recipe["f1"] <= 1.0


def test_wrong_number_of_files_is_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "only-one.tsv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: give two files (train and validation) or none"]
