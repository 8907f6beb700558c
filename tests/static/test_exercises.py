"""Every lesson notebook (01-05) ends with 2-3 graded exercises, each followed by a collapsed solution.

Format (notebooks/_sources, all parts of a notebook together): a markdown heading ``## Exercises``,
then per exercise a markdown line ``**1 (easy) · title**`` (or a heading ``### Exercise 1 (easy): title``)
followed by at least one code cell tagged ``solution``. The solutions run with the notebook (nbval), so
only their presence and their collapsed state are checked here.
"""

import json
import re
from pathlib import Path

import pytest

from workshop_utils.tooling.nbbuild import build, parse_source, parts_of
from workshop_utils.series import SERIES

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "notebooks" / "_sources"
LESSONS = [n.number for n in SERIES if n.exercises]
LEVELS = ["easy", "medium", "hard"]

EXERCISES_HEADING = re.compile(r"^##\s+Exercises\b", re.IGNORECASE)
EXERCISE = re.compile(
    r"^(?:#{3,4}\s*Exercise\s*(?P<n1>\d+)\s*|\*\*\s*(?:Exercise\s*)?(?P<n2>\d+)\s*)\((?P<level>easy|medium|hard)\)",
    re.IGNORECASE,
)


def _source(number: str) -> Path:
    found = [p for p in SOURCES.glob(f"{number}_*.py") if "+" not in p.stem]
    assert found, f"notebooks/_sources/{number}_*.py does not exist yet"
    return found[0]


def _cells(source: Path) -> list[dict]:
    cells = []
    for part in parts_of(source):
        cells.extend(parse_source(part.read_text(encoding="utf-8")))
    return cells


def exercise_structure(cells: list[dict]) -> list[tuple[int, str, int]]:
    """[(exercise number, level, solution cells)] after the last '## Exercises' heading, which must end the notebook."""
    def text(cell):
        return "".join(cell["source"])

    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
              and any(EXERCISES_HEADING.match(line) for line in text(c).splitlines())]
    if not starts:
        raise AssertionError("no '## Exercises' heading")
    exercises: list[list] = []
    for cell in cells[starts[-1]:]:
        if cell["cell_type"] == "markdown":
            for line in text(cell).splitlines():
                if re.match(r"^##\s", line) and not EXERCISES_HEADING.match(line):
                    raise AssertionError(f"a new section after the exercises ({line.strip()!r}): the exercises must come last")
                m = EXERCISE.match(line.strip())
                if m:
                    exercises.append([int(m.group("n1") or m.group("n2")), m.group("level").lower(), 0])
        elif "solution" in cell["metadata"].get("tags", []):
            if not exercises:
                raise AssertionError("a solution cell before the first exercise")
            if not cell["metadata"].get("jupyter", {}).get("source_hidden"):
                raise AssertionError("a solution cell that is not collapsed (jupyter.source_hidden)")
            exercises[-1][2] += 1
        else:
            raise AssertionError(f"a code cell in the exercises that is not tagged 'solution': {text(cell)[:60]!r}")
    return [tuple(e) for e in exercises]


@pytest.mark.parametrize("number", LESSONS)
def test_notebook_ends_with_graded_exercises(number):
    source = _source(number)
    exercises = exercise_structure(_cells(source))
    where = f"{source.name} (and its +parts)"
    assert 2 <= len(exercises) <= 3, f"{where}: {len(exercises)} exercises, expected 2-3"
    numbers = [n for n, _, _ in exercises]
    assert numbers == list(range(1, len(exercises) + 1)), f"{where}: exercises numbered {numbers}"
    levels = [level for _, level, _ in exercises]
    assert levels == sorted(set(levels), key=LEVELS.index), f"{where}: levels {levels} should rise easy -> medium -> hard"
    if len(exercises) == 3:
        assert levels == LEVELS, f"{where}: three exercises should be easy, medium, hard; got {levels}"
    missing = [n for n, _, solutions in exercises if solutions == 0]
    assert not missing, f"{where}: exercise(s) {missing} have no cell tagged 'solution'"


@pytest.mark.parametrize("number", LESSONS)
def test_built_notebook_collapses_solutions(number):
    nb = json.loads(build(_source(number)))
    solutions = [c for c in nb["cells"] if "solution" in c["metadata"].get("tags", [])]
    assert solutions, "no solution cells in the built notebook"
    assert all(c["metadata"]["jupyter"]["source_hidden"] is True for c in solutions)
    assert all(c["cell_type"] == "code" and not c["outputs"] for c in solutions)


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": [text]}


def _solution():
    return {"cell_type": "code", "metadata": {"tags": ["solution"], "jupyter": {"source_hidden": True}}, "source": ["pass"]}


def test_checker_accepts_both_formats_and_rejects_bad_ones():
    good = [_md("## Exercises\n**1 (easy) · a**"), _solution(), _md("### Exercise 2 (medium): b"), _solution()]
    assert exercise_structure(good) == [(1, "easy", 1), (2, "medium", 1)]
    with pytest.raises(AssertionError, match="must come last"):
        exercise_structure(good + [_md("## Summary")])
    with pytest.raises(AssertionError, match="not tagged"):
        exercise_structure(good + [{"cell_type": "code", "metadata": {}, "source": ["x = 1"]}])
    with pytest.raises(AssertionError, match="not collapsed"):
        exercise_structure([_md("## Exercises\n**1 (easy) · a**"), {**_solution(), "metadata": {"tags": ["solution"]}}])
    with pytest.raises(AssertionError, match="no '## Exercises'"):
        exercise_structure([_md("# Title")])
