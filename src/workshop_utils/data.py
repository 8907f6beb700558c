"""The workshop's tasks: sentence classification and instruction sets, from the hub or from local files.

A task comes from a hub id (``nyu-mll/glue`` + config ``mrpc``) or from local files (read and checked by
:mod:`workshop_utils.tables`). Classification tasks have one text column (sentiment) or two (sentence
pairs); instruction sets have an instruction and a response field. Bad input raises a one-line
:class:`DataError`.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

from . import DataError
from .tables import Table, check_no_overlap, find_split_files, parse_labels, read_table, require_columns


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
    tables = {split: read_table(path) for split, path in files.items()}
    if "train" not in tables:
        raise DataError("no training file given; pass --train FILE")
    dd = _checked_dataset(tables, text_columns, label_column, label_names, max_rows, seed)
    if eval_split not in dd and "test" in dd:
        dd["validation"] = dd.pop("test")
    return dd


def _checked_dataset(tables: dict[str, Table], text_columns, label_column, label_names, max_rows, seed, overlap=True):
    """The split tables checked (columns, empty cells, labels, train/eval overlap) into a seeded, capped DatasetDict."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

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
        if split != "train" and overlap:
            check_no_overlap(tables["train"], table, columns)
    features = Features({**{c: Value("string") for c in columns}, "label": ClassLabel(names=names)})
    out = {}
    for split, cols in parsed.items():
        n = len(cols["label"])
        keep = _subset(list(range(n)), (max_rows or {}).get(split), seed)
        out[split] = Dataset.from_dict({k: [v[i] for i in keep] for k, v in cols.items()}, features=features)
    return DatasetDict(out)


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
    if Path(source).exists():
        dd = load_classification_files(_split_files(Path(source)), **kwargs)
        return dd, [c for c in dd["train"].column_names if c != "label"]
    from datasets import load_dataset

    try:
        raw = load_dataset(source, config)
    except Exception as exc:
        raise _load_error(source, config, exc) from None
    kwargs.pop("eval_split", None)
    return check_classification_dataset(raw, **kwargs)


def _split_files(local: Path) -> dict[str, Path]:
    files = find_split_files(local) if local.is_dir() else {"train": local}
    return {k: v for k, v in files.items() if k in ("train", "validation")}


def _load_error(source: str, config: str | None, exc: Exception) -> DataError:
    """What ``load_dataset`` raised, as one line; a local file is re-read by ``read_table``, which names the row."""
    if not Path(source).exists():  # offline, wrong id, gated
        return DataError(f"{source}{f' [{config}]' if config else ''}: could not be loaded from the Hugging Face Hub "
                         f"({exc.__class__.__name__}); check the id and your connection, or use WORKSHOP_PROFILE=offline")
    try:
        for path in _split_files(Path(source)).values():
            read_table(path)
    except DataError as err:
        return err
    return DataError(f"{source}: load_dataset could not read it ({exc.__class__.__name__}); GLUE-style TSV files are "
                     "tab-separated, with a header line and no quoting")


@contextmanager
def classification_file_errors(profile):
    """Around ``load_dataset`` on the profile's classification data: what it raises becomes a one-line DataError
    (for local files the one :func:`workshop_utils.tables.read_table` raises, naming the file and row)."""
    try:
        yield
        return
    except DataError:
        raise
    except Exception as exc:
        error = _load_error(profile.clf_data, profile.clf_data_config, exc)
    raise error from None


def check_classification_dataset(dd, profile=None, *, data_files=None, text_columns=None, label_column: str = "label",
                                 label_names=None, max_rows=None, seed: int = 0):
    """``load_dataset``'s result, checked and ready for training: ``train``/``validation`` with the text columns and
    a ``ClassLabel`` label, capped with the seeded subsets of :func:`load_classification_files` (the profile's rows).
    Returns ``(DatasetDict, text_columns)``. The checks are the local files' own, so a bad row is a one-line
    DataError naming the file (``data_files`` or the profile's folder; the split for the hub), row and column.
    """
    from datasets import ClassLabel

    if profile is not None:
        max_rows = max_rows or {"train": profile.clf_train_rows, "validation": profile.clf_eval_rows}
        if data_files is None and Path(profile.clf_data).exists():
            data_files = _split_files(Path(profile.clf_data))
    missing = [s for s in ("train", "validation") if s not in dd]
    if missing:
        raise DataError(f"the dataset has no '{missing[0]}' split (found {list(dd)}); name the files train and validation")
    feature = dd["train"].features.get(label_column)
    label_names = label_names or (feature.names if isinstance(feature, ClassLabel) else None)
    tables = {}
    for split in ("train", "validation"):
        rows = dd[split].to_list()
        where = Path((data_files or {}).get(split) or f"{split} split")
        tables[split] = Table(where, dd[split].column_names, rows, [i + 2 for i in range(len(rows))])
    try:
        out = _checked_dataset(tables, text_columns, label_column, label_names, max_rows, seed, overlap=bool(data_files))
    except DataError:
        if data_files:  # the files read line by line: the same error with the file's own line numbers
            load_classification_files(data_files, text_columns=text_columns, label_column=label_column,
                                      label_names=label_names)
        raise
    return out, [c for c in out["train"].column_names if c != "label"]


# --------------------------------------------------------------------------- instruction sets
def load_instruction_files(
    files: dict[str, Path | str] | Path | str,
    *,
    instruction_field: str = "instruction",
    response_field: str = "response",
    test_fraction: float = 0.15,
    max_rows: dict[str, int | None] | None = None,
    seed: int = 0,
    extra_fields: Sequence[str] = (),
):
    """Instruction/response pairs from jsonl/csv/tsv into a DatasetDict with ``train`` and ``test``.

    One file is split here so that no instruction is shared between the splits; two files are checked
    for shared instructions and for shared answers. Output columns are ``instruction`` and ``response``, plus
    each of ``extra_fields`` (e.g. ``focus``, the topic) as text, empty where a row lacks it.
    """
    files = files if isinstance(files, dict) else _instruction_files(files)
    tables = {split: read_table(p) for split, p in files.items() if split in ("train", "test")}
    return _checked_instructions(tables, [instruction_field, response_field], test_fraction=test_fraction,
                                 max_rows=max_rows, seed=seed, extra_fields=extra_fields)


def _checked_instructions(tables: dict[str, Table], fields: Sequence[str], *, test_fraction: float = 0.15,
                          max_rows: dict[str, int | None] | None = None, seed: int = 0, extra_fields: Sequence[str] = ()):
    """The checks and the row caps of an instruction set read into tables (one per split), as a DatasetDict."""
    from datasets import Dataset, DatasetDict

    instruction_field, response_field = fields
    for table in tables.values():
        require_columns(table, fields, what="field", options="--instruction-field / --response-field")
        for index, row in enumerate(table.rows):
            for f in fields:
                if not isinstance(row[f], str):
                    raise DataError(f"{table.where(index, f)}: expected text, got {type(row[f]).__name__}")

    def pairs(table: Table) -> list[dict[str, str]]:
        return [{"instruction": r[instruction_field].strip(), "response": r[response_field].strip(),
                 **{f: str(r.get(f) or "").strip() for f in extra_fields}} for r in table.rows]

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


def _instruction_files(source: Path | str) -> dict[str, Path]:
    path = Path(source)
    files = find_split_files(path) if path.is_dir() else {"train": path}
    if "validation" in files and "test" not in files:
        files["test"] = files.pop("validation")
    return {split: p for split, p in files.items() if split in ("train", "test")}


def check_instruction_dataset(dd, profile, **kwargs):
    """What ``load_dataset("json", data_files=...)`` read from the profile's folder, checked as
    :func:`load_instruction_task` checks it (fields, text, no held-out question or answer in training; one-line
    errors naming file, row and field), then cut to the profile's seeded row caps: ``instruction``/``response``."""
    files = _instruction_files(profile.llm_data)
    kwargs.setdefault("max_rows", {"train": profile.llm_train_rows, "test": profile.llm_eval_rows})
    tables = {}
    for split, ds in dd.items():
        if split not in files:
            raise DataError(f"{profile.llm_data}: no {split} file for the dataset's '{split}' split")
        rows = ds.to_list()
        text = files[split].read_text(encoding="utf-8-sig")
        lines = [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if len(lines) != len(rows) or files[split].suffix != ".jsonl":  # csv/tsv: line 1 is the header
            lines = [i + (1 if files[split].suffix == ".jsonl" else 2) for i in range(len(rows))]
        tables[split] = Table(files[split], list(ds.column_names), rows, lines)
    return _checked_instructions(tables, list(profile.llm_fields), **kwargs)


@contextmanager
def instruction_file_errors(profile):
    """Around ``load_dataset`` on the profile's files: a malformed file becomes the one-line DataError naming its
    file, row and field (the files are re-read by :func:`workshop_utils.tables.read_table`, which names the row)."""
    try:
        yield
    except Exception:
        try:  # files that read cleanly here leave load_dataset's own error
            load_instruction_files(profile.llm_data, instruction_field=profile.llm_fields[0], response_field=profile.llm_fields[1])
        except DataError as err:
            raise err from None
        raise


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


def _load_hub_instructions(source: str, fields: Sequence[str], *, max_rows=None, seed: int = 0, test_fraction: float = 0.15,
                           extra_fields: Sequence[str] = ()):
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
        {"instruction": str(r[fields[0]]).strip(), "response": str(r[fields[1]]).strip(),
         **{f: str(r.get(f) or "").strip() for f in extra_fields}}
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
