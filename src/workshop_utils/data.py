"""Loading and validating the workshop's data, in one place.

A task comes from a hub id (``nyu-mll/glue`` + config ``mrpc``) or from local files: csv, tsv
(GLUE-style: tab-separated, *no* quoting, quote characters inside the text) or jsonl. Classification
tasks have one text column (sentiment) or two (sentence pairs); instruction sets have an instruction
and a response field.

Every malformed input becomes a :class:`DataError` whose message is one line naming the file, the row
and the column, and saying how to fix it. Row numbers count data rows from 1; for text files the
line number is given too (the header is line 1).
"""

from __future__ import annotations

import csv
import json
import random
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
            f"{path}: file not found; check the path (shipped data: `workshop make-data` rebuilds data/paraphrase, "
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


# --------------------------------------------------------------------------- classification tasks
def _subset(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in picked]


def infer_text_columns(columns: Sequence[str]) -> list[str]:
    for candidate in (["sentence1", "sentence2"], ["question1", "question2"], ["premise", "hypothesis"]):
        if all(c in columns for c in candidate):
            return candidate
    for single in ("sentence", "text", "review"):
        if single in columns:
            return [single]
    raise DataError(f"cannot tell the text columns among {list(columns)}; pass --text-columns")


def load_classification_files(
    files: dict[str, Path | str],
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    eval_split: str = "validation",
    max_rows: dict[str, int | None] | None = None,
    seed: int = 0,
):
    """Read and validate local split files into a ``datasets.DatasetDict`` (columns: texts + label)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    tables = {split: read_table(path) for split, path in files.items()}
    if "train" not in tables:
        raise DataError("no training file given; pass --train FILE")
    columns = list(text_columns) if text_columns else infer_text_columns(tables["train"].columns)
    if not 1 <= len(columns) <= 2:
        raise DataError(f"--text-columns takes one column or two (a sentence pair), got {columns}")
    names: list[str] | None = None
    parsed: dict[str, dict[str, list]] = {}
    for split, table in tables.items():
        require_columns(table, [*columns, label_column])
        labels, split_names = parse_labels(table, label_column, label_names)
        names = names or split_names
        parsed[split] = {c: [str(r[c]) for r in table.rows] for c in columns}
        parsed[split]["label"] = labels
    for split, table in tables.items():
        if split != "train":
            check_no_overlap(tables["train"], table, columns)
    features = Features({**{c: Value("string") for c in columns}, "label": ClassLabel(names=names)})
    out = {}
    for split, cols in parsed.items():
        n = len(cols["label"])
        keep = _subset(list(range(n)), (max_rows or {}).get(split), seed)
        out[split] = Dataset.from_dict({k: [v[i] for i in keep] for k, v in cols.items()}, features=features)
    dd = DatasetDict(out)
    if eval_split not in dd and "test" in dd:
        dd["validation"] = dd.pop("test")
    return dd


def load_classification_task(profile=None, *, source: str | None = None, config: str | None = None, **kwargs):
    """The classifier task of a profile (or of an explicit ``source``): hub id or local folder.

    Returns ``(DatasetDict with train/validation, text_columns)``.
    """
    if profile is not None:
        source = source or profile.clf_data
        config = config if config is not None else profile.clf_data_config
        kwargs.setdefault("max_rows", {"train": profile.clf_train_rows, "validation": profile.clf_eval_rows})
    if source is None:
        raise DataError("no data source given: pass a profile, a hub id or a folder")
    local = Path(source)
    if local.exists():
        files = find_split_files(local) if local.is_dir() else {"train": local}
        files = {k: v for k, v in files.items() if k in ("train", "validation")}
        dd = load_classification_files(files, **kwargs)
    else:
        dd = _load_hub_classification(source, config, **kwargs)
    columns = [c for c in dd["train"].column_names if c != "label"]
    return dd, columns


def _load_hub_classification(source: str, config: str | None, *, max_rows=None, seed: int = 0, **_ignored):
    """A task from the hub (the GPU/CPU profiles), with the same checks as local files."""
    from datasets import DatasetDict, load_dataset

    try:
        raw = load_dataset(source, config)
    except Exception as exc:  # offline, wrong id, gated
        raise DataError(
            f"{source}{f' [{config}]' if config else ''}: could not be loaded from the Hugging Face Hub "
            f"({exc.__class__.__name__}); check the id and your connection, or use WORKSHOP_PROFILE=offline"
        ) from None
    keep = {}
    for split in ("train", "validation"):
        if split not in raw:
            raise DataError(f"{source}: has no '{split}' split (found {list(raw)})")
        ds = raw[split]
        drop = [c for c in ("idx",) if c in ds.column_names]
        ds = ds.remove_columns(drop)
        n = (max_rows or {}).get(split)
        if n is not None and n < len(ds):
            ds = ds.shuffle(seed=seed).select(range(n))
        keep[split] = ds
    return DatasetDict(keep)


# --------------------------------------------------------------------------- instruction sets
def load_instruction_files(
    files: dict[str, Path | str] | Path | str,
    *,
    instruction_field: str = "instruction",
    response_field: str = "response",
    test_fraction: float = 0.15,
    max_rows: dict[str, int | None] | None = None,
    seed: int = 0,
):
    """Instruction/response pairs from jsonl/csv/tsv into a DatasetDict with ``train`` and ``test``.

    One file is split here so that no instruction is shared between the splits; two files are checked
    for shared instructions and for shared answers. Output columns are always ``instruction`` and ``response``.
    """
    from datasets import Dataset, DatasetDict

    if not isinstance(files, dict):
        path = Path(files)
        files = find_split_files(path) if path.is_dir() else {"train": path}
        if "validation" in files and "test" not in files:
            files["test"] = files.pop("validation")
    tables = {split: read_table(p) for split, p in files.items() if split in ("train", "test")}
    fields = [instruction_field, response_field]
    for table in tables.values():
        require_columns(table, fields, what="field", options="--instruction-field / --response-field")
        for index, row in enumerate(table.rows):
            for f in fields:
                if not isinstance(row[f], str):
                    raise DataError(f"{table.where(index, f)}: expected text, got {type(row[f]).__name__}")

    def pairs(table: Table) -> list[dict[str, str]]:
        return [{"instruction": r[instruction_field].strip(), "response": r[response_field].strip()} for r in table.rows]

    if "test" in tables:
        check_no_overlap(tables["train"], tables["test"], [instruction_field])
        # a held-out answer the model was trained on measures recall, not answering a new question
        check_no_overlap(
            tables["train"], tables["test"], [response_field], what="same answer",
            fix="drop the row from the held-out file, or hold out whole topics so no answer is in both "
            "(as scripts/build_medquad.py does)",
        )
        train, test = pairs(tables["train"]), pairs(tables["test"])
    else:
        rows = pairs(tables["train"])
        prompts = sorted({r["instruction"] for r in rows})
        if len(prompts) < 2:
            raise DataError(f"{tables['train'].path}: needs at least 2 different instructions to hold one out for evaluation")
        train, test = _split_by_prompt(rows, test_fraction, seed)
    limits = max_rows or {}
    train = _subset(train, limits.get("train"), seed)
    test = _subset(test, limits.get("test"), seed)
    return DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)})


def _split_by_prompt(rows: list[dict[str, str]], test_fraction: float, seed: int):
    """Hold out whole prompts (no instruction in both splits), one row per held-out prompt."""
    prompts = sorted({r["instruction"] for r in rows})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: min(len(prompts) - 1, max(1, round(len(prompts) * test_fraction)))])
    train = [r for r in rows if r["instruction"] not in held]
    seen: set[str] = set()
    # the evaluation asks each held-out question once
    test = [r for r in rows if r["instruction"] in held and not (r["instruction"] in seen or seen.add(r["instruction"]))]
    return train, test


def load_instruction_task(profile=None, *, source: str | None = None, fields: Sequence[str] | None = None, **kwargs):
    """The instruction set of a profile (hub id or local folder/file) as train/test with instruction/response."""
    if profile is not None:
        source = source or profile.llm_data
        fields = fields or profile.llm_fields
        kwargs.setdefault("max_rows", {"train": profile.llm_train_rows, "test": profile.llm_eval_rows})
    fields = list(fields or ("instruction", "response"))
    if source is None:
        raise DataError("no data source given: pass a profile, a hub id or a file")
    if Path(source).exists():
        return load_instruction_files(source, instruction_field=fields[0], response_field=fields[1], **kwargs)
    return _load_hub_instructions(source, fields, **kwargs)


def _load_hub_instructions(source: str, fields: Sequence[str], *, max_rows=None, seed: int = 0, test_fraction: float = 0.15):
    from datasets import Dataset, DatasetDict, load_dataset

    try:
        raw = load_dataset(source, split="train")
    except Exception as exc:
        raise DataError(
            f"{source}: could not be loaded from the Hugging Face Hub ({exc.__class__.__name__}); "
            "check the id and your connection, or use WORKSHOP_PROFILE=offline"
        ) from None
    for f in fields:
        if f not in raw.column_names:
            raise DataError(f"{source}: missing field '{f}' (found: {', '.join(raw.column_names)}); pass the right field names")
    rows = [
        {"instruction": str(r[fields[0]]).strip(), "response": str(r[fields[1]]).strip()}
        for r in raw
        if r[fields[0]] and r[fields[1]]
    ]
    train, test = _split_by_prompt(rows, test_fraction, seed)
    limits = max_rows or {}
    return DatasetDict(
        {
            "train": Dataset.from_list(_subset(train, limits.get("train"), seed)),
            "test": Dataset.from_list(_subset(test, limits.get("test"), seed)),
        }
    )


def describe(dd, text_columns: Iterable[str] | None = None) -> str:
    """A short text summary of a DatasetDict: rows and label balance per split."""
    parts = []
    for split, ds in dd.items():
        line = f"{split}: {len(ds):,} rows"
        if "label" in ds.column_names:
            labels = ds["label"]
            pos = sum(1 for x in labels if x == 1)
            line += f", {pos / max(1, len(labels)):.1%} label 1"
        parts.append(line)
    return "; ".join(parts)
