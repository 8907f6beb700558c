"""The series registry (workshop_utils.series) matches what exists: the notebooks and their sources, the
commands, the time estimates, the results record's "run this first" messages and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workshop_utils import MissingArtifactError
from workshop_utils.commands.cli import COMMANDS
from workshop_utils.estimates import series_estimate
from workshop_utils.tooling.nbbuild import notebook_sources
from workshop_utils.profiles import make_profile
from workshop_utils.results import Results
from workshop_utils.series import SERIES

ROOT = Path(__file__).resolve().parents[2]
NAMES = [n.name for n in SERIES]


def test_registry_lists_every_notebook_in_order():
    built = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    sources = sorted(p.stem for p in notebook_sources(ROOT / "notebooks" / "_sources"))
    assert NAMES == sorted(NAMES) == built == sources
    assert [n.number for n in SERIES] == [f"{i:02d}" for i in range(len(SERIES))]


def test_commands_exist():
    for entry in SERIES:
        if entry.command:
            assert entry.command in COMMANDS, f"{entry.name}: no `workshop {entry.command}`"


def test_every_notebook_has_an_estimate():
    for name in ("smoke", "offline"):
        estimate = series_estimate(make_profile(name, "test", cuda=False, hub=False))
        assert list(estimate.per_notebook) == NAMES
        assert all(seconds > 0 for seconds in estimate.per_notebook.values())


def test_missing_entry_names_the_producer(tmp_path):
    with pytest.raises(MissingArtifactError) as caught:
        Results(tmp_path / "results.json").require("03_qlora_llama3_sft", "sft")
    message = str(caught.value)
    assert "notebooks/03_qlora_llama3_sft.ipynb" in message and "workshop sft" in message and "\n" not in message


def test_readme_table_lists_the_series():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\d\d_[a-z0-9_]+)` \|", readme, re.M)
    assert rows == NAMES, "README's notebook table and workshop_utils.series.SERIES differ"
