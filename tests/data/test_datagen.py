"""Tests for the deterministic paraphrase generator, scripts/make_paraphrase_data.py.

(data/medquad is real text built by scripts/build_medquad.py; tests/data/test_medquad_data.py covers it.)
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data"


def _load_script():
    """The generator is a build script in scripts/, not part of the package: import it from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_paraphrase_data", ROOT / "scripts" / "make_paraphrase_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


datagen = _load_script()

EXPECTED_FILES = [
    Path("paraphrase/train.tsv"),
    Path("paraphrase/validation.tsv"),
]
REGENERATE = "python scripts/make_paraphrase_data.py"


@pytest.fixture(scope="module")
def para():
    return datagen.make_paraphrase_pairs()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    paths = datagen.write_all(out)
    return out, paths


# --------------------------------------------------------------------------- #
# Determinism
# --------------------------------------------------------------------------- #

def test_paraphrase_generation_is_deterministic(para):
    assert datagen.make_paraphrase_pairs() == para
    assert datagen.make_paraphrase_pairs(seed=0) == para


def test_seed_changes_output(para):
    assert datagen.make_paraphrase_pairs(seed=1) != para


def test_global_random_state_is_neither_used_nor_changed(para):
    random.seed(12345)
    state = random.getstate()
    again = datagen.make_paraphrase_pairs()
    assert random.getstate() == state
    assert again == para


def test_write_all_is_byte_identical(tmp_path, written):
    first_dir, first_paths = written
    second_paths = datagen.write_all(tmp_path)
    assert [p.relative_to(first_dir) for p in first_paths] == EXPECTED_FILES
    assert [p.relative_to(tmp_path) for p in second_paths] == EXPECTED_FILES
    for rel in EXPECTED_FILES:
        assert (first_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


@pytest.mark.parametrize("rel", EXPECTED_FILES, ids=str)
def test_committed_data_matches_generator(rel, written):
    out, _ = written
    committed = DATA_DIR / rel
    assert committed.is_file(), f"{committed} is missing; run `{REGENERATE}`"
    assert committed.read_bytes() == (out / rel).read_bytes(), (
        f"{committed} differs from the generator output; run `{REGENERATE}`"
    )


# --------------------------------------------------------------------------- #
# Paraphrase pairs
# --------------------------------------------------------------------------- #

def test_paraphrase_splits_and_columns(para):
    assert set(para) == {"train", "validation"}
    for split, (n_rows, _) in datagen.PARAPHRASE_SIZES.items():
        rows = para[split]
        assert len(rows) == n_rows
        for row in rows:
            assert list(row) == list(datagen.PARAPHRASE_COLUMNS)
            assert row["label"] in (0, 1)
            assert row["sentence1"].strip() and row["sentence2"].strip()
            assert row["sentence1"] != row["sentence2"]
    assert 1400 <= len(para["train"]) <= 1800
    assert 300 <= len(para["validation"]) <= 500


@pytest.mark.parametrize("split", ["train", "validation"])
def test_paraphrase_label_balance(para, split):
    positive = sum(r["label"] for r in para[split]) / len(para[split])
    assert 0.6 <= positive <= 0.72, positive


def test_paraphrase_no_duplicates_or_split_overlap(para):
    def pairs(split):
        return [(r["sentence1"], r["sentence2"]) for r in para[split]]

    train, val = pairs("train"), pairs("validation")
    assert len(set(train)) == len(train)
    assert len(set(val)) == len(val)
    assert not set(train) & set(val)
    # stronger: no sentence (in either position) is shared between the splits
    train_sents = {s for pair in train for s in pair}
    val_sents = {s for pair in val for s in pair}
    assert not train_sents & val_sents


def test_paraphrase_covers_every_domain_and_frame(para):
    domains = {f.domain for f in datagen.PARAPHRASE_FRAMES}
    assert domains == {"business", "sports", "science", "politics", "weather", "tech"}
    assert len(datagen.PARAPHRASE_FRAMES) >= 12


def test_paraphrase_fields_are_tsv_safe(para):
    quoted = 0
    for rows in para.values():
        for row in rows:
            for key in ("sentence1", "sentence2"):
                text = row[key]
                assert "\t" not in text and "\n" not in text and "\r" not in text
                assert text == text.strip()
                quoted += '"' in text
    assert quoted >= 50, "expected some sentences with quoted speech"


@pytest.mark.parametrize("split", ["train", "validation"])
def test_tsv_file_format(written, para, split):
    out, _ = written
    path = out / "paraphrase" / f"{split}.tsv"
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert lines[0] == "label\tsentence1\tsentence2"
    assert all(line.count("\t") == 2 for line in lines)
    assert any('"' in line for line in lines[1:])

    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        parsed = [
            {"label": int(r["label"]), "sentence1": r["sentence1"], "sentence2": r["sentence2"]}
            for r in reader
        ]
    assert parsed == para[split]


def test_tsv_loads_with_datasets(written, para, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, _ = written
    ds = datasets.load_dataset(
        "csv",
        data_files={"validation": str(out / "paraphrase" / "validation.tsv")},
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        cache_dir=str(tmp_path / "hf_cache"),
    )["validation"]
    assert ds.column_names == list(datagen.PARAPHRASE_COLUMNS)
    assert ds.num_rows == len(para["validation"])
    assert ds[:5]["sentence1"] == [r["sentence1"] for r in para["validation"][:5]]
    assert sum(ds["label"]) == sum(r["label"] for r in para["validation"])


def test_write_all_writes_only_the_paraphrase_set(tmp_path):
    datagen.write_all(tmp_path)
    # the instruction set is real MedQuAD text (scripts/build_medquad.py); nothing else is generated here
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == sorted(EXPECTED_FILES)
    assert not hasattr(datagen, "make_medical_instructions")


def test_number_words():
    assert datagen.number_words(0) == "zero"
    assert datagen.number_words(13) == "thirteen"
    assert datagen.number_words(40) == "forty"
    assert datagen.number_words(72) == "seventy-two"
    with pytest.raises(ValueError):
        datagen.number_words(100)
