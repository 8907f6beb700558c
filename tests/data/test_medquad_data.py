"""data/medquad: the committed MedQuAD subset is honestly held out, and its build script does what it says.

The checks of the committed files re-implement the rules here (focus normalisation, topics, the
near-duplicate test) rather than calling the build script, so a bug in the script cannot hide itself.
Nothing here reads the original MedQuAD file: the build script is tested on a small synthetic input.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "medquad"
SCRIPT = ROOT / "scripts" / "build_medquad.py"
FIELDS = ["instruction", "response", "focus", "qtype", "collection", "doc_id", "url"]
MAX_ANSWER_TOKENS = 120  # answer + EOS, the build's --max-answer-tokens
MIN_ANSWER_TOKENS = 20
TRAIN_MAX_LENGTH = 256  # the recipes' max_length
CHAT_ALLOWANCE = 64  # chat template + system prompt; measured ~31 tokens with SmolLM2's template


# --------------------------------------------------------------------------- the rules, re-implemented
def norm_text(text: str) -> str:
    return " ".join(text.split()).lower()


def norm_focus(focus: str) -> str:
    text = re.sub(r"['\u2019]s\b", "", focus.lower())
    return " ".join(re.sub(r"[^a-z0-9\s]", " ", text).split())


def norm_answer(row: dict) -> str:
    focus, answer = " ".join(row["focus"].split()), " ".join(row["response"].split())
    return norm_text(re.sub(re.escape(focus), "<focus>", answer, flags=re.IGNORECASE) if focus else answer)


def grams(text: str) -> frozenset:
    words = re.findall(r"<focus>|\w+", text)
    return frozenset(tuple(words[i:i + 5]) for i in range(len(words) - 4))


def topic_count(rows: list[dict]) -> int:
    """Connected components of 'same normalised focus or same (collection, doc_id)'."""
    parent = list(range(len(rows)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    owner: dict = {}
    for i, row in enumerate(rows):
        keys = [("doc", row["collection"], row["doc_id"])]
        if norm_focus(row["focus"]):
            keys.append(("focus", norm_focus(row["focus"])))
        for key in keys:
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    return len({find(i) for i in range(len(rows))})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: read_jsonl(DATA / f"{split}.jsonl") for split in ("train", "test")}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from workshop_utils.assets import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path())


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_medquad", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the committed files
@pytest.mark.parametrize("split", ["train", "test"])
def test_file_format(split):
    raw = (DATA / f"{split}.jsonl").read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    for line in raw.decode("utf-8").splitlines():
        row = json.loads(line)
        assert list(row) == FIELDS
        assert all(isinstance(v, str) and v.strip() and v == " ".join(v.split()) for v in row.values()), row


def test_sizes(splits):
    assert 150 <= len(splits["test"]) <= 260
    assert 1000 <= len(splits["train"]) <= 3000
    size = sum((DATA / f"{s}.jsonl").stat().st_size for s in splits)
    assert size < 3_000_000, f"{size:,} bytes: keep the shipped set small"


def test_no_topic_in_both_splits(splits):
    train, test = splits["train"], splits["test"]
    shared_focus = {norm_focus(r["focus"]) for r in train} & {norm_focus(r["focus"]) for r in test}
    assert not shared_focus, sorted(shared_focus)[:5]
    shared_docs = {(r["collection"], r["doc_id"]) for r in train} & {(r["collection"], r["doc_id"]) for r in test}
    assert not shared_docs, sorted(shared_docs)[:5]


def test_no_question_in_both_splits(splits):
    shared = {norm_text(r["instruction"]) for r in splits["train"]} & {norm_text(r["instruction"]) for r in splits["test"]}
    assert not shared, sorted(shared)[:5]


def test_no_answer_twice_anywhere(splits):
    answers = Counter(norm_text(r["response"]) for rows in splits.values() for r in rows)
    repeated = [a for a, n in answers.items() if n > 1]
    assert not repeated, repeated[:3]


def test_no_test_answer_nearly_repeats_a_train_answer(splits):
    train = [(norm_answer(r), grams(norm_answer(r))) for r in splits["train"]]
    texts = {t for t, _ in train}
    for row in splits["test"]:
        text = norm_answer(row)
        assert text not in texts, row
        mine = grams(text)
        for other_text, other in train:
            shared = len(mine & other)
            if shared:
                similarity = shared / (len(mine) + len(other) - shared)
                assert similarity <= 0.5, (row["response"], other_text)


def test_every_answer_fits_the_budget_with_its_eos(splits, tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    rows = splits["train"] + splits["test"]
    answers = tokenizer([r["response"] for r in rows], add_special_tokens=False)["input_ids"]
    questions = tokenizer([r["instruction"] for r in rows], add_special_tokens=False)["input_ids"]
    for row, a, q in zip(rows, answers, questions):
        assert MIN_ANSWER_TOKENS <= len(a) + 1 <= MAX_ANSWER_TOKENS, (len(a) + 1, row["response"][:80])
        assert len(q) + len(a) + 1 + CHAT_ALLOWANCE <= TRAIN_MAX_LENGTH, row["instruction"]
        assert re.search(r"[.!?][)\"]?$", row["response"]), row["response"][-40:]


def _tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Markdown tables by their first header cell: {title: {row name: [cells...]}}."""
    tables, current = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = tables.setdefault(cells[0], {})
        elif not set(cells[0]) <= {"-"}:
            current[cells[0]] = cells[1:]
    return tables


def test_readme_counts_match_the_files(splits, tokenizer):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    start, end = readme.index("<!-- counts:start"), readme.index("<!-- counts:end -->")
    section = readme[start:end]
    tables = _tables(section)

    def num(cell: str) -> int:
        return int(cell.replace(",", ""))

    for split, rows in splits.items():
        assert [num(c) for c in tables["split"][split]] == [len(rows), topic_count(rows)], split
    for column in ("qtype", "collection"):
        expected = {name: [0, 0] for rows in splits.values() for name in {r[column] for r in rows}}
        for i, split in enumerate(("train", "test")):
            for name, n in Counter(r[column] for r in splits[split]).items():
                expected[name][i] = n
        assert {name: [num(c) for c in cells] for name, cells in tables[column].items()} == expected, column
    assert num(tables["step"]["written (train + test)"][0]) == len(splits["train"]) + len(splits["test"])
    longest = max(len(ids) + 1 for ids in tokenizer(
        [r["response"] for rows in splits.values() for r in rows], add_special_tokens=False)["input_ids"])
    assert f"longest answer: {longest} tokens including EOS" in section


def test_readme_is_a_data_card():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for needed in ("577bd37b96c02d1833b2c9eed2de9f96964e96cb", "CC BY 4.0", "BMC Bioinformatics", "not medical advice",
                   "selected, not cut", "scripts/build_medquad.py", "Modified:", "## Limitations"):
        assert needed in readme, needed


# --------------------------------------------------------------------------- the build script
WORDS = (
    "blood cells tissue nerve muscle bone skin liver kidney heart lung brain gene protein enzyme hormone "
    "fever pain swelling rash fatigue weakness seizures vision hearing growth delay infection bleeding "
    "early later childhood adulthood rarely often mild severe slowly rapidly usually sometimes affected "
    "people families doctors tests imaging surgery medicine therapy diet exercise rest support care "
    "signs symptoms changes levels cause damage loss control movement speech memory balance breathing"
).split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _synthetic_rows(n_topics: int = 40) -> list[dict]:
    rng = random.Random(7)
    rows = []

    def add(focus, qtype, answer, doc, collection="3_GHR_QA", question=None):
        rows.append({
            "instruction": question or f"What is the {qtype} of {focus} ?", "response": answer, "focus": focus,
            "qtype": qtype, "source": "synthetic", "collection": collection, "doc_id": doc,
            "qid": f"{doc}-{len(rows)}", "url": f"https://example.org/{doc}", "split": "train",
        })

    for t in range(n_topics):
        name = f"Zarnik type {t} syndrome"
        doc = f"{t:07d}"
        add(name, "information", f"{name} is a disorder of the {_sentence(rng, 24).lower()}", doc)
        # a template that differs only in the name: the exact-after-placeholder rule
        add(name, "inheritance", f"{name} is inherited in an autosomal recessive pattern, which means both copies "
                                 "of the gene in each cell have mutations. The parents each carry one copy.", doc)
        # a template that differs in the name and a number: the 5-gram Jaccard rule
        add(name, "frequency", f"{name} affects an estimated 1 in {1000 + 37 * t} newborns worldwide. It has been "
                               "reported in many populations and is thought to be underdiagnosed in adults.", doc)
    # linked topics: one document with two foci, and a third row joined by a possessive spelling
    add("Quellin anemia", "information", "Quellin anemia is " + _sentence(rng, 30).lower(), "0900001", "2_GARD_QA")
    add("Brask disease", "causes", "Brask disease is caused by " + _sentence(rng, 30).lower(), "0900001", "2_GARD_QA")
    add("Brask's Disease", "treatment", "Treatment is " + _sentence(rng, 30).lower(), "0900002", "6_NINDS_QA")
    # not selected: too long, no final punctuation, too short
    add("Overlong disorder", "information", _sentence(rng, 200), "0900003")
    add("Unfinished disorder", "information", _sentence(rng, 30)[:-1] + " Diarrhea Vomiting", "0900004")
    add("Stub disorder", "information", "It is rare.", "0900005")
    # an exact duplicate answer in another topic: only the first is kept
    add("Copy disorder", "information", rows[0]["response"], "0900006")
    return rows


def _write_input(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_build_is_deterministic_and_counts(builder, tokenizer, tmp_path, capsys):
    rows = _synthetic_rows()
    src = _write_input(tmp_path / "in.jsonl", rows)
    for out in ("a", "b"):
        assert builder.main([str(src), "--out", str(tmp_path / out), "--test-rows", "12"], tokenizer=tokenizer) == 0
    printed = capsys.readouterr().out
    for split in ("train", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    assert f"read {len(rows)} rows" in printed and "duplicate answers dropped: 1" in printed
    other = tmp_path / "c"
    assert builder.main([str(src), "--out", str(other), "--test-rows", "12", "--seed", "1"], tokenizer=tokenizer) == 0
    assert (other / "test.jsonl").read_bytes() != (tmp_path / "a" / "test.jsonl").read_bytes()


def test_build_holds_out_whole_topics_and_no_templates(builder, tokenizer):
    result = builder.build(_synthetic_rows(), tokenizer, seed=0, test_rows=12)
    train, test = result.train, result.test
    assert 8 <= len(test) and train
    # topic-disjoint, including the shared-document link and the possessive spelling
    assert not {norm_focus(r["focus"]) for r in train} & {norm_focus(r["focus"]) for r in test}
    assert not {(r["collection"], r["doc_id"]) for r in train} & {(r["collection"], r["doc_id"]) for r in test}
    linked = {"quellin anemia", "brask disease"}
    sides = {split for split, rows in (("train", train), ("test", test)) for r in rows if norm_focus(r["focus"]) in linked}
    assert len(sides) == 1
    keys = builder.topic_keys([r for r in _synthetic_rows() if r["doc_id"] in ("0900001", "0900002")])
    assert len(set(keys)) == 1
    # the templated answers never reach test (each held-out Zarnik topic loses two); they stay in train
    assert not {"inheritance", "frequency"} & {r["qtype"] for r in test}
    assert {"inheritance", "frequency"} <= {r["qtype"] for r in train}
    held_out_templates = sum(1 for r in test if r["focus"].startswith("Zarnik"))
    assert held_out_templates and result.counts["near_duplicates_dropped"] == 2 * held_out_templates
    # selected, not cut: the long, unfinished and stub answers are nowhere, and kept answers are whole
    kept = {r["focus"] for r in train + test}
    assert not kept & {"Overlong disorder", "Unfinished disorder", "Stub disorder"}
    originals = {r["response"] for r in _synthetic_rows()}
    assert all(r["response"] in originals for r in train + test)
    assert len({norm_text(r["response"]) for r in train + test}) == len(train + test)


def test_build_caps_train_with_a_seeded_sample(builder, tokenizer):
    full = builder.build(_synthetic_rows(), tokenizer, seed=0, test_rows=12, max_train_rows=None)
    capped = builder.build(_synthetic_rows(), tokenizer, seed=0, test_rows=12, max_train_rows=20)
    assert len(capped.train) == 20 and len(full.train) > 20
    assert {r["response"] for r in capped.train} <= {r["response"] for r in full.train}
    assert capped.test == full.test


def test_near_duplicate_rule(builder):
    tail = " people in Europe and Asia, and it is more common in women than in men of the same age."
    a = {"focus": "Zarnik syndrome", "response": "Zarnik syndrome affects about 1 in 5000" + tail}
    b = {"focus": "Pell disease", "response": "Pell disease affects about 1 in 9000" + tail}
    c = {"focus": "Pell disease", "response": "Pell disease is treated with rest, fluids and a diet low in salt."}
    index = builder.AnswerIndex([b, c])
    assert index.match(a, lambda j: True) == 0
    assert index.match(a, lambda j: j != 0) is None
    # too few words for a 5-gram: only the answer with the focus replaced can match
    short = builder.AnswerIndex([{"focus": "Pell disease", "response": "Pell  disease is inherited."}])
    assert short.match({"focus": "Zarnik syndrome", "response": "ZARNIK SYNDROME is inherited."}, lambda j: True) == 0
    assert short.match({"focus": "Zarnik syndrome", "response": "Zarnik syndrome is common."}, lambda j: True) is None
    assert builder.normalise_focus("Parkinson's  Disease, Type-2") == "parkinson disease type 2"


def _error(builder, tmp_path, capsys, text: str | None) -> str:
    src = tmp_path / ("bad.jsonl" if text is not None else "absent.jsonl")
    if text is not None:
        src.write_text(text, encoding="utf-8")
    assert builder.main([str(src), "--out", str(tmp_path / "out")], tokenizer=object()) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(src) in err, err
    assert not (tmp_path / "out").exists()
    return err


def test_malformed_input_gives_one_line_errors(builder, tmp_path, capsys):
    good = json.dumps(_synthetic_rows()[0])
    assert "line 2: not valid JSON" in _error(builder, tmp_path, capsys, good + "\n{not json\n")
    missing = {k: v for k, v in _synthetic_rows()[0].items() if k != "focus"}
    assert "line 3: missing field 'focus'" in _error(builder, tmp_path, capsys, f"{good}\n\n{json.dumps(missing)}\n")
    assert "line 1: expected a JSON object" in _error(builder, tmp_path, capsys, "[1, 2]\n")
    assert "not found" in _error(builder, tmp_path, capsys, None)
