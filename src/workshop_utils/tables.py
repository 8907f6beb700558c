"""Reading data files and checking them, with one-line errors; writing rows as a markdown table.

Local files are csv, tsv (GLUE-style: tab-separated, *no* quoting, quote characters inside the text) or
jsonl. Every malformed input becomes a :class:`DataError` whose message is one line naming the file, the
row and the column, and saying how to fix it. Row numbers count data rows from 1; for text files the
line number is given too (the header is line 1). :mod:`workshop_utils.data` builds the workshop's tasks
on top of these.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import DataError

TEXT_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "dev", "valid", "val", "eval"),
    "test": ("test",),
}


@dataclass
class Table:
    """Rows read from one file, with what is needed to point at a row in an error message."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    line_numbers: list[int]  # file line of each row (1-based); jsonl: the line of the object

    def where(self, index: int, column: str | None = None) -> str:
        col = f", column '{column}'" if column else ""
        return f"{self.path}: row {index + 1} (line {self.line_numbers[index]}){col}"


# --------------------------------------------------------------------------- reading files
def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(
            f"{path}: file not found; check the path (shipped data: `python scripts/make_paraphrase_data.py` rebuilds data/paraphrase, "
            "scripts/build_medquad.py data/medquad)"
        )
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a .csv, .tsv or .jsonl file")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        row = line if path.suffix.lower() == ".jsonl" else max(1, line - 1)  # csv/tsv: line 1 is the header
        raise DataError(
            f"{path}: line {line} (row {row}), byte {exc.start}: not valid UTF-8 "
            f"({raw[exc.start:exc.start + 1]!r}); re-save the file as UTF-8"
        ) from None
    if not text.strip():
        need = "one JSON object per line" if path.suffix.lower() == ".jsonl" else "a header line and at least one row"
        raise DataError(f"{path}: file is empty; it needs {need}")
    return text


def read_table(path: Path | str) -> Table:
    """Read a csv, tsv or jsonl file into a :class:`Table`, with one-line errors."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use .csv, .tsv or .jsonl")
    text = _read_text(path)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, text)
    return _read_delimited(path, text, tsv=suffix == ".tsv")


def _read_delimited(path: Path, text: str, *, tsv: bool) -> Table:
    lines = text.splitlines()
    if tsv:
        # GLUE style: no quoting at all. Quote characters are ordinary text.
        records = [(i + 1, line.split("\t")) for i, line in enumerate(lines) if line.strip()]
    else:
        reader = csv.reader(lines)
        records = []
        try:
            for fields in reader:
                if any(f.strip() for f in fields):
                    records.append((reader.line_num, fields))
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc}); check quoting on that line") from None
    if not records:
        raise DataError(f"{path}: file is empty; it needs a header line and at least one row")
    header_line, header = records[0]
    columns = [c.strip() for c in header]
    if len(set(columns)) != len(columns) or any(not c for c in columns):
        raise DataError(f"{path}: line {header_line}: header {columns} has empty or repeated column names")
    rows, numbers = [], []
    for index, (line_no, fields) in enumerate(records[1:]):
        if len(fields) != len(columns):
            hint = "a tab inside the text?" if tsv else "an unquoted comma or a stray quote?"
            raise DataError(
                f"{path}: row {index + 1} (line {line_no}): {len(fields)} fields but the header has "
                f"{len(columns)} ({hint})"
            )
        rows.append(dict(zip(columns, fields)))
        numbers.append(line_no)
    if not rows:
        raise DataError(f"{path}: has a header but no rows")
    return Table(path, columns, rows, numbers)


def _read_jsonl(path: Path, text: str) -> Table:
    rows, numbers, columns = [], [], []
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        enumerated = [(i + 1, item) for i, item in enumerate(items)]
    else:
        enumerated = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                enumerated.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: row {len(enumerated) + 1} (line {line_no}): not valid JSON ({exc.msg} at "
                    f"character {exc.colno}); each line must be one JSON object"
                ) from None
    for line_no, item in enumerated:
        if not isinstance(item, dict):
            raise DataError(f"{path}: row {len(rows) + 1} (line {line_no}): expected a JSON object, got {type(item).__name__}")
        for key in item:
            if key not in columns:
                columns.append(key)
        rows.append(item)
        numbers.append(line_no)
    if not rows:
        raise DataError(f"{path}: file is empty; it needs at least one JSON object per line")
    return Table(path, columns, rows, numbers)


# --------------------------------------------------------------------------- checks
def require_columns(table: Table, needed: Sequence[str], what: str = "column",
                    options: str = "--text-columns / --label-column") -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(
            f"{table.path}: missing {what} '{missing[0]}' (found: {', '.join(table.columns)}); "
            f"rename the {what} or pass the right name ({options})"
        )
    for index, row in enumerate(table.rows):
        for col in needed:
            value = row.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{table.where(index, col)}: empty value; fill it in or drop the row")


def parse_labels(table: Table, column: str, label_names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Labels as class ids 0..K-1, with their names.

    Accepted: integers (or integer strings) 0..K-1, where K = len(label_names) or 2; text labels when
    ``label_names`` lists them. Anything else is an error naming the row.
    """
    names = list(label_names) if label_names else None
    k = len(names) if names else 2
    ids: list[int] = []
    for index, row in enumerate(table.rows):
        value = row[column]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                value = int(text)
            elif names and text in names:
                value = names.index(text)
            else:
                hint = (
                    f"expected one of {names} or 0..{k - 1}" if names
                    else "labels must be class ids 0/1; for text labels pass --label-names (e.g. negative,positive)"
                )
                raise DataError(f"{table.where(index, column)}: label {text!r} is not a class id; {hint}")
        if not isinstance(value, int) or not 0 <= value < k:
            raise DataError(
                f"{table.where(index, column)}: label {value!r} is not one of the expected classes 0..{k - 1}; "
                "fix the row or pass --label-names listing every class"
            )
        ids.append(value)
    return ids, names or [str(i) for i in range(k)]


def check_no_overlap(
    train: Table,
    other: Table,
    key_columns: Sequence[str],
    *,
    what: str = "same text",
    fix: str = "remove it from one split (train/eval overlap inflates scores)",
) -> None:
    """Rows shared between training and evaluation inflate the score: refuse them.

    Texts are compared ignoring case and runs of whitespace. ``what`` and ``fix`` word the error.
    """

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(" ".join(str(row[c]).split()).lower() for c in key_columns)

    seen = {}
    for index, row in enumerate(train.rows):
        seen.setdefault(key(row), index)
    for index, row in enumerate(other.rows):
        hit = seen.get(key(row))
        if hit is not None:
            raise DataError(
                f"{other.where(index, key_columns[0])}: {what} as {train.path.name} row {hit + 1} "
                f"(line {train.line_numbers[hit]}); {fix}"
            )


# --------------------------------------------------------------------------- locating files
def find_split_files(folder: Path | str) -> dict[str, Path]:
    """``{"train": ..., "validation": ..., "test": ...}`` for the split files found in a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; check the path")
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            for suffix in TEXT_SUFFIXES:
                candidate = folder / f"{alias}{suffix}"
                if candidate.is_file() and split not in found:
                    found[split] = candidate
    if "train" not in found:
        raise DataError(f"{folder}: no train.tsv/.csv/.jsonl found; name the training file train.<ext>")
    return found


# --------------------------------------------------------------------------- writing tables
def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """The workshop's one markdown table: ``| a | b |`` lines under a ``|---|---|`` rule, each cell as ``str()``
    (format numbers before; a ``|`` inside a cell is the caller's to replace)."""
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
