"""The loader turns every malformed input into one line naming file, row and column."""

import pytest

from conftest import write
from workshop_utils import DataError
from workshop_utils.data import load_classification_files, load_classification_task, load_instruction_files
from workshop_utils.tables import read_table

TSV_HEADER = "label\tsentence1\tsentence2\n"


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def pair_files(tmp_path, train_rows, val_rows, suffix="tsv"):
    sep = "\t" if suffix == "tsv" else ","
    header = sep.join(["label", "sentence1", "sentence2"]) + "\n"
    tr = write(tmp_path / f"train.{suffix}", header + "".join(sep.join(r) + "\n" for r in train_rows))
    va = write(tmp_path / f"validation.{suffix}", header + "".join(sep.join(r) + "\n" for r in val_rows))
    return {"train": tr, "validation": va}


GOOD_TRAIN = [("1", "The cat sat.", "A cat was sitting."), ("0", "Prices rose 5%.", "Prices fell 5%.")]
GOOD_VAL = [("1", "It rained today.", "There was rain today."), ("0", "He won.", "He lost.")]


def test_glue_style_tsv_with_quotes_loads(tmp_path):
    rows = [("1", 'He said "yes" to the deal.', 'The deal got a "yes" from him.'), ("0", '"Stop," she said.', 'She said "go".')]
    files = pair_files(tmp_path, rows, GOOD_VAL)
    dd = load_classification_files(files)
    assert dd["train"][0]["sentence1"] == 'He said "yes" to the deal.'
    assert dd["train"][1]["sentence1"] == '"Stop," she said.'  # a leading quote is text, not CSV quoting
    assert dd["train"].features["label"].num_classes == 2


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_classification_files({"train": tmp_path / "nope.tsv"})
    assert "nope.tsv" in one_line(err) and "not found" in str(err.value)


def test_empty_file(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    write(files["train"], "")
    with pytest.raises(DataError) as err:
        load_classification_files(files)
    assert "train.tsv" in one_line(err) and "empty" in str(err.value)


def test_header_only(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    write(files["validation"], TSV_HEADER)
    with pytest.raises(DataError, match="no rows"):
        load_classification_files(files)


def test_missing_column(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    write(files["train"], "label\tsentence1\tother\n1\ta\tb\n")
    with pytest.raises(DataError) as err:
        load_classification_files(files, text_columns=["sentence1", "sentence2"])
    msg = one_line(err)
    assert "train.tsv" in msg and "'sentence2'" in msg and "found: label, sentence1, other" in msg


def test_unexpected_label_names_row_and_column(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN + [("2", "x y", "y x")], GOOD_VAL)
    with pytest.raises(DataError) as err:
        load_classification_files(files)
    msg = one_line(err)
    assert "train.tsv: row 3 (line 4), column 'label'" in msg and "0..1" in msg


def test_text_labels_need_names(tmp_path):
    files = pair_files(tmp_path, [("yes", "a b", "b a"), ("no", "c d", "d c")], GOOD_VAL)
    with pytest.raises(DataError) as err:
        load_classification_files(files)
    assert "row 1 (line 2), column 'label'" in one_line(err) and "--label-names" in str(err.value)


def test_text_labels_with_names_map_to_ids(tmp_path):
    files = pair_files(tmp_path, [("yes", "a b", "b a"), ("no", "c d", "d c")], [("no", "e f", "f e")])
    dd = load_classification_files(files, label_names=["no", "yes"])
    assert dd["train"]["label"] == [1, 0] and dd["validation"]["label"] == [0]
    assert dd["train"].features["label"].names == ["no", "yes"]


def test_integer_labels_as_text_are_accepted(tmp_path):
    (tmp_path / "j").mkdir()
    write(tmp_path / "j" / "train.jsonl", '{"text": "good film", "label": "1"}\n{"text": "bad film", "label": 0}\n')
    dd = load_classification_files({"train": tmp_path / "j" / "train.jsonl"}, text_columns=["text"])
    assert dd["train"]["label"] == [1, 0]


def test_undecodable_bytes(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    write(files["train"], TSV_HEADER.encode() + b"1\tgood\tok\n0\tcaf\xe9 latte\tx\n")
    with pytest.raises(DataError) as err:
        load_classification_files(files)
    msg = one_line(err)
    assert "train.tsv: line 3 (row 2)" in msg and "UTF-8" in msg


def test_rows_shared_between_train_and_eval(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL + [("0", "Prices rose 5%.", "Prices  fell 5%.")])
    with pytest.raises(DataError) as err:
        load_classification_files(files)
    msg = one_line(err)
    assert "validation.tsv: row 3 (line 4)" in msg and "train.tsv row 2" in msg and "overlap" in msg


def test_tab_inside_text_is_caught(tmp_path):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    write(files["train"], TSV_HEADER + "1\ta\tb\textra\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): 4 fields but the header has 3"):
        load_classification_files(files)


def test_empty_text_cell(tmp_path):
    files = pair_files(tmp_path, [("1", "a", " ")], GOOD_VAL)
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column 'sentence2': empty value"):
        load_classification_files(files)


def test_csv_with_quoting_and_single_sentence(tmp_path):
    write(tmp_path / "train.csv", 'text,label\n"Great, really great",1\n"Bad ""movie""",0\n')
    write(tmp_path / "validation.csv", "text,label\nfine,1\n")
    dd, cols = load_classification_task(source=str(tmp_path))
    assert cols == ["text"]
    assert dd["train"]["text"] == ["Great, really great", 'Bad "movie"']


def test_malformed_jsonl_line(tmp_path):
    write(tmp_path / "train.jsonl", '{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": \n')
    with pytest.raises(DataError) as err:
        load_instruction_files(tmp_path / "train.jsonl")
    assert "train.jsonl: row 2 (line 2)" in one_line(err) and "not valid JSON" in str(err.value)


def test_instruction_missing_field(tmp_path):
    write(tmp_path / "d.jsonl", '{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n')
    with pytest.raises(DataError, match="missing field 'instruction'"):
        load_instruction_files(tmp_path / "d.jsonl")
    dd = load_instruction_files(tmp_path / "d.jsonl", instruction_field="question", response_field="answer", test_fraction=0.5)
    assert set(dd["train"].column_names) == {"instruction", "response"}


def test_instruction_split_shares_no_prompt(tmp_path):
    lines = [f'{{"instruction": "Define term {i % 40}.", "response": "Term {i % 40} is a thing."}}' for i in range(120)]
    write(tmp_path / "all.jsonl", "\n".join(lines) + "\n")
    dd = load_instruction_files(tmp_path / "all.jsonl", test_fraction=0.2)
    assert not set(dd["train"]["instruction"]) & set(dd["test"]["instruction"])
    assert len(dd["test"]) == 8 and len(set(dd["test"]["instruction"])) == 8


def test_instruction_files_overlap_is_refused(tmp_path):
    write(tmp_path / "train.jsonl", '{"instruction": "Define X.", "response": "X is y."}\n')
    write(tmp_path / "test.jsonl", '{"instruction": "define  x.", "response": "X is y."}\n')
    with pytest.raises(DataError, match=r"test.jsonl: row 1 \(line 1\), column 'instruction': same text as train.jsonl row 1"):
        load_instruction_files(tmp_path)


def test_held_out_answer_seen_in_training_is_refused(tmp_path):
    write(tmp_path / "train.jsonl", '{"instruction": "What is X ?", "response": "X is a rare  condition."}\n'
                                    '{"instruction": "What causes Y ?", "response": "Y is caused by Z."}\n')
    write(tmp_path / "test.jsonl", '{"instruction": "What is W ?", "response": "W is a disease."}\n'
                                   '{"instruction": "Who gets Q ?", "response": "y IS caused  by z."}\n')
    with pytest.raises(DataError) as err:
        load_instruction_files(tmp_path)
    msg = one_line(err)
    assert "test.jsonl: row 2 (line 2), column 'response': same answer as train.jsonl row 2 (line 2)" in msg
    assert "drop the row" in msg
    # different answers load
    write(tmp_path / "test.jsonl", '{"instruction": "Who gets Q ?", "response": "Q affects adults."}\n')
    assert load_instruction_files(tmp_path)["test"]["response"] == ["Q affects adults."]


def test_unsupported_suffix(tmp_path):
    write(tmp_path / "data.xlsx", "x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(tmp_path / "data.xlsx")


def test_shipped_data_loads_through_profile(monkeypatch):
    from workshop_utils.data import load_instruction_task
    from workshop_utils.profiles import make_profile

    p = make_profile("smoke", "test", cuda=False, hub=False)
    dd, cols = load_classification_task(p)
    assert cols == ["sentence1", "sentence2"]
    assert len(dd["train"]) == p.clf_train_rows and len(dd["validation"]) == p.clf_eval_rows
    inst = load_instruction_task(p)
    assert len(inst["test"]) == p.llm_eval_rows
    assert not set(inst["train"]["instruction"]) & set(inst["test"]["instruction"])


# --------------------------------------------------------------------------- 03/05's data cell: load_dataset + check
def data_cell_lines(name="03_qlora_llama3_sft"):
    """The notebook's own lines from `with instruction_file_errors` to `check_instruction_dataset`."""
    from conftest import ROOT

    lines = (ROOT / "notebooks" / "_sources" / f"{name}.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("with instruction_file_errors(profile):"))
    end = next(i for i, line in enumerate(lines) if line.startswith("dataset = check_instruction_dataset(raw, profile)"))
    assert end == start + 2, "the data cell is: with ...: load_dataset(...), then check_instruction_dataset(...)"
    return [line.split("  #")[0] for line in lines[start:end + 1]]


def run_data_cell(profile):
    from datasets import load_dataset
    from workshop_utils.data import check_instruction_dataset, instruction_file_errors

    scope = {"profile": profile, "load_dataset": load_dataset, "check_instruction_dataset": check_instruction_dataset,
             "instruction_file_errors": instruction_file_errors}
    exec("\n".join(data_cell_lines()), scope)
    return scope["dataset"]


def test_05_loads_its_data_with_03s_lines():
    assert data_cell_lines("05_preference_dpo") == data_cell_lines()


@pytest.mark.parametrize("name", ["smoke", "offline"])
def test_data_cell_returns_the_rows_of_load_instruction_task(name):
    from workshop_utils.data import load_instruction_task
    from workshop_utils.profiles import make_profile

    p = make_profile(name, "test", cuda=False, hub=False)
    cell, task = run_data_cell(p), load_instruction_task(p)
    for split in ("train", "test"):
        assert cell[split].column_names == task[split].column_names == ["instruction", "response"]
        assert cell[split].to_list() == task[split].to_list()
    if name == "smoke":
        assert (len(cell["train"]), len(cell["test"])) == (p.llm_train_rows, p.llm_eval_rows)


def cell_profile(tmp_path):
    import dataclasses

    from workshop_utils.profiles import make_profile

    return dataclasses.replace(make_profile("smoke", "test", cuda=False, hub=False), llm_data=str(tmp_path))


def test_data_cell_malformed_file_is_one_line(tmp_path):
    write(tmp_path / "train.jsonl", '{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": \n')
    write(tmp_path / "test.jsonl", '{"instruction": "d", "response": "e"}\n')
    with pytest.raises(DataError) as err:
        run_data_cell(cell_profile(tmp_path))
    assert "train.jsonl: row 2 (line 2)" in one_line(err) and "not valid JSON" in str(err.value)
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_data_cell_missing_field_is_one_line(tmp_path):
    write(tmp_path / "train.jsonl", '{"question": "a", "answer": "b"}\n')
    write(tmp_path / "test.jsonl", '{"question": "c", "answer": "d"}\n')
    with pytest.raises(DataError) as err:
        run_data_cell(cell_profile(tmp_path))
    assert "train.jsonl: missing field 'instruction' (found: question, answer)" in one_line(err)


def test_data_cell_shared_answer_is_one_line(tmp_path):
    write(tmp_path / "train.jsonl", '{"instruction": "What is X ?", "response": "X is a rare  condition."}\n\n'
                                    '{"instruction": "What causes Y ?", "response": "Y is caused by Z."}\n')
    write(tmp_path / "test.jsonl", '{"instruction": "What is W ?", "response": "W is a disease."}\n'
                                   '{"instruction": "Who gets Q ?", "response": "y IS caused  by z."}\n')
    with pytest.raises(DataError) as err:
        run_data_cell(cell_profile(tmp_path))
    msg = one_line(err)
    assert "test.jsonl: row 2 (line 2), column 'response': same answer as train.jsonl row 2 (line 3)" in msg
    assert "drop the row" in msg


# --------------------------------------------------------------------------- 01/02's data cell: load_dataset + check
def classifier_cell_lines(name="02_full_finetune_trainer"):
    """The notebook's own lines from `with classification_file_errors` to `check_classification_dataset`."""
    from conftest import ROOT

    lines = (ROOT / "notebooks" / "_sources" / f"{name}.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("with classification_file_errors(profile):"))
    end = lines.index("clf_data, text_columns = check_classification_dataset(raw, profile)")
    return lines[start:end + 1]


def run_classifier_cell(profile, name="02_full_finetune_trainer"):
    import csv

    from datasets import load_dataset
    from workshop_utils.data import check_classification_dataset, classification_file_errors

    scope = {"profile": profile, "csv": csv, "load_dataset": load_dataset, "classification_file_errors":
             classification_file_errors, "check_classification_dataset": check_classification_dataset}
    exec("\n".join(classifier_cell_lines(name)), scope)
    return scope["clf_data"], scope["text_columns"]


def smoke_profile(**changes):
    import dataclasses

    from workshop_utils.profiles import make_profile

    return dataclasses.replace(make_profile("smoke", "test", cuda=False, hub=False), **changes)


@pytest.mark.parametrize("name", ["01_baseline_evaluation", "02_full_finetune_trainer"])
def test_notebook_data_cell_gives_the_rows_load_classification_task_gives(name):
    p = smoke_profile()
    assert classifier_cell_lines(name) == classifier_cell_lines()  # 01 and 02 load the data the same way
    dd, cols = run_classifier_cell(p, name)
    ref, ref_cols = load_classification_task(p)
    assert cols == ref_cols == ["sentence1", "sentence2"]
    assert len(dd["train"]) == p.clf_train_rows and len(dd["validation"]) == p.clf_eval_rows
    for split in ("train", "validation"):
        assert dd[split].features == ref[split].features
        assert dd[split].to_list() == ref[split].to_list()  # same rows, same order, same seeded subset
    assert any('"' in s for s in dd["train"]["sentence1"])  # quote characters stay text (no quoting)


def test_notebook_data_cell_whole_files_match(tmp_path):
    p = smoke_profile(clf_train_rows=None, clf_eval_rows=None)
    dd, _ = run_classifier_cell(p)
    ref, _ = load_classification_task(p)
    assert len(dd["train"]) == 1600 and dd["train"].to_list() == ref["train"].to_list()
    assert dd["validation"].to_list() == ref["validation"].to_list()


@pytest.mark.parametrize("bad_row, expected", [
    ("1\tOne.\tTwo.\tthree\n", "row 3 (line 4): 4 fields but the header has 3"),  # load_dataset itself fails
    ("1\tOne.\n", "row 3 (line 4): 2 fields but the header has 3"),  # load_dataset fills in a missing value
    ("2\tOne.\tTwo.\n", "row 3 (line 4), column 'label': label 2 is not one of the expected classes"),
    ("1\t \tTwo.\n", "row 3 (line 4), column 'sentence1': empty value"),
])
def test_notebook_data_cell_errors_name_file_and_row(tmp_path, bad_row, expected):
    files = pair_files(tmp_path, GOOD_TRAIN, GOOD_VAL)
    files["train"].write_text(files["train"].read_text() + bad_row)
    with pytest.raises(DataError) as err:
        run_classifier_cell(smoke_profile(clf_data=str(tmp_path)))
    assert one_line(err).startswith(f"{files['train']}: {expected}"), one_line(err)


def test_notebook_data_cell_refuses_a_pair_in_both_splits(tmp_path):
    pair_files(tmp_path, GOOD_TRAIN, [GOOD_TRAIN[0], GOOD_VAL[1]])
    with pytest.raises(DataError) as err:
        run_classifier_cell(smoke_profile(clf_data=str(tmp_path)))
    assert "validation.tsv: row 1 (line 2), column 'sentence1': same text as train.tsv row 1" in one_line(err)


def test_check_hub_shaped_dataset_keeps_class_names_and_drops_idx():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from workshop_utils.data import check_classification_dataset

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")})

    def split(rows):
        return Dataset.from_dict({"sentence1": [r[1] for r in rows], "sentence2": [r[2] for r in rows],
                                  "label": [int(r[0]) for r in rows], "idx": list(range(len(rows)))}, features=features)

    raw = DatasetDict({"train": split(GOOD_TRAIN), "validation": split(GOOD_VAL), "test": split(GOOD_VAL)})
    dd, cols = check_classification_dataset(raw, max_rows={"train": 1})
    assert cols == ["sentence1", "sentence2"] and list(dd) == ["train", "validation"]
    assert dd["train"].features["label"].names == ["not_equivalent", "equivalent"] and len(dd["train"]) == 1
    with pytest.raises(DataError) as err:
        check_classification_dataset(DatasetDict({"train": split(GOOD_TRAIN)}))
    assert "no 'validation' split" in one_line(err)
