"""Retrieval (notebook 06, `workshop rag`): the shipped corpus never holds a held-out answer, the corpus loader's
one-line errors, the retrieval and scoring helpers, and the command end to end on the tiny random Llama."""

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT, write

HELD_OUT = ROOT / "data" / "medquad" / "test.jsonl"
CORPUS_DIR = ROOT / "data" / "medquad-corpus"
CORPUS = CORPUS_DIR / "corpus.jsonl"
SOURCE = ROOT / "notebooks" / "_sources" / "06_rag_vs_finetune.py"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- the shipped corpus, checked independently
def five_grams(text: str) -> set:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}


def squash(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def test_no_passage_holds_a_held_out_answer():
    """Written apart from workshop_utils.corpus.leaking_passages: for every held-out answer, the largest share of its
    word 5-grams that any one passage holds stays at or below half, and no passage repeats it or its question."""
    held, corpus = rows(HELD_OUT), rows(CORPUS)
    by_gram = defaultdict(set)
    for i, passage in enumerate(corpus):
        for g in five_grams(passage["text"]):
            by_gram[g].add(i)
    worst = 0.0
    for row in held:
        grams = five_grams(row["response"])
        counts = defaultdict(int)
        for g in grams:
            for i in by_gram.get(g, ()):
                counts[i] += 1
        worst = max(worst, max(counts.values(), default=0) / len(grams))
    assert worst <= 0.5, f"a passage holds {worst:.0%} of a held-out answer's 5-grams"
    rows_of = defaultdict(list)  # a source row's passages together: a held-out answer must not hide in two halves
    for p in corpus:
        rows_of[(p["collection"], p["doc_id"], p["question"])].append(p["text"].split("\n", 1)[1])
    for row in held:
        grams = five_grams(row["response"])
        for parts in rows_of.values():
            assert len(grams & five_grams(" ".join(parts))) <= 0.5 * len(grams), (row["instruction"], parts)
    texts = [squash(p["text"]) for p in corpus]
    questions = {squash(p["question"]) for p in corpus}
    for row in held:
        assert squash(row["instruction"]) not in questions, row["instruction"]
        assert not any(squash(row["response"]) in t for t in texts), row["instruction"]


def test_the_corpus_covers_the_held_out_topics_and_its_card_counts_match():
    held, corpus = rows(HELD_OUT), rows(CORPUS)
    norm = lambda f: " ".join(re.sub(r"[^\w\s]|_", " ", re.sub(r"['\u2019]s\b", "", f.lower())).split())  # noqa: E731
    held_topics = {norm(r["focus"]) for r in held}
    covered = held_topics & {norm(p["focus"]) for p in corpus}
    assert len(covered) >= 0.9 * len(held_topics), f"{len(covered)} of {len(held_topics)} held-out topics have passages"
    docs = {(r["collection"], r["doc_id"]) for r in held}
    near = sum(1 for p in corpus if norm(p["focus"]) in held_topics or (p["collection"], p["doc_id"]) in docs)
    card = (CORPUS_DIR / "README.md").read_text(encoding="utf-8")

    def counted(label: str) -> int:
        return int(re.search(rf"\| {re.escape(label)} \| ([\d,]+) \|", card).group(1).replace(",", ""))

    assert counted("passages written") == len(corpus)
    assert counted("passages written, about held-out topics") == near
    assert counted("passages written, about other topics") == len(corpus) - near
    assert all(set(p) >= {"text", "focus"} and p["text"].strip() for p in corpus)


# --------------------------------------------------------------------------- the loader and the leak rule
def test_leaking_passages_finds_most_of_an_answer_and_nothing_less():
    from workshop_utils.corpus import leaking_passages

    answer = "Gout is a common form of arthritis that causes sudden attacks of pain in the big toe."
    passages = ["What is gout?\n" + answer + " More follows.",  # all of it
                "Gout is a common form of arthritis that causes sudden attacks.",  # most of it
                "Gout is a common form of arthritis; it is treated with rest.",  # a few 5-grams only
                "Psoriasis is a skin disease."]
    assert leaking_passages(passages, [answer]) == [(0, 0), (1, 0)]


CORPUS_ERRORS = {
    "no text field": ('{"passage": "x"}\n', "missing field 'text'"),
    "empty text": ('{"text": "  "}\n', "row 1 (line 1), column 'text': empty value"),
    "text not a string": ('{"text": "fine"}\n{"text": 3}\n', "row 2 (line 2), column 'text': expected text, got int"),
    "not json": ('{"text": "fine"}\n{oops\n', "row 2 (line 2): not valid JSON"),
    "a held-out answer": ('{"text": "Wilson disease causes copper to build up in the liver and brain."}\n',
                          "row 1 (line 1), column 'text': holds most of held-out answer 1"),
}


@pytest.mark.parametrize("case", list(CORPUS_ERRORS))
def test_bad_corpora_are_one_line_errors(case, tmp_path):
    from workshop_utils import DataError
    from workshop_utils.corpus import load_corpus

    text, expected = CORPUS_ERRORS[case]
    path = write(tmp_path / "corpus.jsonl", text)
    held_out = {"response": ["Wilson disease causes copper to build up in the liver and brain."]}
    with pytest.raises(DataError) as info:
        load_corpus(path, held_out=held_out)
    message = str(info.value)
    assert "\n" not in message and "corpus.jsonl" in message and expected in message, message


# --------------------------------------------------------------------------- helpers of the recipe
def test_recall_prompt_and_bm25():
    from workshop_utils.recipes.rag_vs_finetune import bm25_index, bm25_search, recall_at_k, with_passages

    texts = ["Gout: uric acid crystals in the big toe.", "Asthma narrows the airways.", "Psoriasis: scaly skin patches."]
    assert bm25_search(bm25_index(texts), ["What causes asthma attacks?", "Who gets psoriasis?"], 1) == [[1], [2]]
    topics = ["Gout", "asthma", "Psoriasis"]
    assert recall_at_k([[1, 0], [0, 1]], ["Asthma", "psoriasis"], topics, 1) == 0.5
    assert recall_at_k([[1, 0], [0, 2]], ["Asthma's", "Psoriasis"], topics, 2) == 1.0
    prompt = with_passages("What is gout?", texts[:2])
    assert prompt.index("[1] Gout") < prompt.index("[2] Asthma") < prompt.index("Question: What is gout?")


def test_paired_difference_and_semscore():
    import numpy as np

    from workshop_utils.metrics import paired_difference, semantic_similarity

    change = paired_difference([1.0, 2.0, 2.5, 4.0], [1.5, 2.5, 2.0, 5.0])
    assert change["mean"] == pytest.approx(-0.375) and change["share_lower"] == 0.75 and change["questions"] == 4
    assert change["low"] <= change["mean"] <= change["high"]

    class Encoder:  # unit vectors by the first word
        def encode(self, texts, **_):
            table = {"gout": [1.0, 0.0], "asthma": [0.0, 1.0], "": [1.0, 0.0]}
            return np.array([table[(t.split() or [""])[0].lower()] for t in texts])

    assert semantic_similarity(["Gout hurts", "asthma"], ["gout is pain", "gout"], Encoder()) == pytest.approx(0.5)
    assert semantic_similarity(["", "gout"], ["gout", "gout"], Encoder()) == pytest.approx(0.5)  # empty scores 0


# --------------------------------------------------------------------------- `workshop rag`
@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A LoRA adapter (random, non-zero) on the tiny random Llama, saved as 03 saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.assets import tiny_llama_path

    torch.manual_seed(0)
    base = tiny_llama_path()
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                      task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("rag") / "adapter"
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture
def rag_inputs(tmp_path):
    """Three real held-out questions, two training rows, and a corpus: each question's passages plus distractors."""
    from workshop_utils.corpus import topic_key

    held, corpus = rows(HELD_OUT)[:3], rows(CORPUS)
    data = tmp_path / "data"
    write(data / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows(ROOT / "data" / "medquad" / "train.jsonl")[:2]))
    write(data / "test.jsonl", "".join(json.dumps(r) + "\n" for r in held))
    topics = {topic_key(r["focus"]) for r in held}
    on_topic = [p for p in corpus if topic_key(p["focus"]) in topics][:4]
    chosen = on_topic + [p for p in corpus if topic_key(p["focus"]) not in topics][:4]
    passages = write(tmp_path / "corpus.jsonl", "".join(json.dumps({"text": p["text"], "focus": p["focus"]}) + "\n"
                                                        for p in chosen))
    return data, passages, held


def test_rag_command_writes_the_four_systems(tiny_adapter, rag_inputs, tmp_path, capsys):
    from workshop_utils.commands.cli import main

    data, corpus, held = rag_inputs
    out = tmp_path / "run"
    args = ["rag", "--adapter", str(tiny_adapter), "--data", str(data), "--corpus", str(corpus), "--output-dir", str(out),
            "--k", "2", "--eval-rows", "3", "--generate-rows", "2", "--max-new-tokens", "4"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"base", "base_rag", "sft", "sft_rag", "k", "retrieval_recall_at_k", "bm25_recall_at_k"}
    assert metrics["k"] == 2 and metrics["questions"] == 3 and metrics["passages"] == 8
    assert 0.0 <= metrics["retrieval_recall_at_k"] <= 1.0
    for system in ("base", "base_rag", "sft", "sft_rag"):
        scores = metrics[system]
        assert set(scores) >= {"nll", "rougeL", "eos_rate", "repetition", "similarity", "decoding"}
        assert scores["answered"] == 2 and scores["nll"] > 0 and -1.0 <= scores["similarity"] <= 1.0
    assert metrics["base"]["nll"] != metrics["sft"]["nll"], "the adapter was not switched off for the base model"
    assert metrics["base"]["nll"] != metrics["base_rag"]["nll"], "the passages did not reach the prompt"
    assert metrics["prompt_tokens"]["with_passages"] > metrics["prompt_tokens"]["question"]
    change = metrics["nll_change_from_retrieval"]["sft"]
    assert change["questions"] == 3 and change["low"] <= change["mean"] <= change["high"]
    assert "metrics.json in" in capsys.readouterr().out
    assert main(args) == 2  # a finished run is not overwritten
    assert "already holds a finished run" in capsys.readouterr().err


def test_rag_command_checks_its_input_before_loading_anything(tiny_adapter, rag_inputs, tmp_path, capsys, monkeypatch):
    from workshop_utils.commands.cli import main
    from workshop_utils.recipes import rag_vs_finetune

    monkeypatch.setattr(rag_vs_finetune, "load_encoder", lambda *a, **k: pytest.fail("loaded before the checks"))
    data, corpus, held = rag_inputs
    leaking = write(tmp_path / "leak.jsonl", json.dumps({"text": "Background.\n" + held[1]["response"]}) + "\n")
    no_test = tmp_path / "no-test"
    write(no_test / "train.jsonl", (data / "train.jsonl").read_text())
    cases = [
        (["--adapter", str(tmp_path)], "not a LoRA adapter folder"),
        (["--adapter", str(tiny_adapter), "--corpus", str(leaking)], "leak.jsonl: row 1 (line 1), column 'text': holds most"),
        (["--adapter", str(tiny_adapter), "--data", str(no_test)], "must be a folder with train.jsonl and test.jsonl"),
        (["--adapter", str(tiny_adapter), "--k", "0"], "--k must be a positive number"),
    ]
    for extra, expected in cases:
        argv = ["rag", "--data", str(data), "--corpus", str(corpus), *extra, "--output-dir", str(tmp_path / "o")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err, err
        assert not (tmp_path / "o").exists()


def test_notebook_and_command_run_the_same_recipe():
    """06's export cells are the recipe module; the notebook scores through ``score_systems`` with the profile, as
    the command does with the profile its options changed (and nothing else)."""
    import argparse

    from workshop_utils.tooling.nbbuild import export_module, export_target
    from workshop_utils.profiles import active_profile
    from workshop_utils.commands.rag import _profile_for, add_arguments

    assert export_target(SOURCE).read_text(encoding="utf-8") == export_module(SOURCE), "run `python -m workshop_utils.tooling.nbbuild`"
    text = SOURCE.read_text(encoding="utf-8")
    assert "score_systems(model, tokenizer, questions, rag_questions, references, profile=profile, encoder=encoder)" in text
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plain = _profile_for(parser.parse_args(["--adapter", "a", "--output-dir", "o"]))
    assert plain == active_profile()
    changed = _profile_for(parser.parse_args(["--adapter", "a", "--output-dir", "o", "--k", "5", "--max-new-tokens", "7"]))
    assert (changed.rag_k, changed.max_new_tokens) == (5, 7)
    assert {f for f in vars(plain) if getattr(plain, f) != getattr(changed, f)} == {"rag_k", "max_new_tokens"}


# --------------------------------------------------------------------------- the build script, on a synthetic source
def _source_row(question, answer, focus, doc):
    return {"instruction": question, "response": answer, "focus": focus, "qtype": "information", "collection": "c",
            "doc_id": doc, "url": "u"}


def test_build_script_keeps_other_answers_about_held_out_topics_and_drops_leaks(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_medquad_corpus", ROOT / "scripts" / "build_medquad_corpus.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    held = [_source_row("What is Gout ?", "Gout is a painful arthritis caused by crystals of uric acid in a joint.", "Gout", "1")]
    source = held + [
        _source_row("What are the symptoms of gout ?", "Attacks start at night. The big toe swells and turns red.", "gout", "2"),
        _source_row("What is (are) gout ?", "Gout is a painful arthritis caused by crystals of uric acid in a joint. See a doctor.",
                    "Gout", "3"),  # repeats the held-out answer
        _source_row("What is Gout?", "A different text on the same question.", "Gout", "4"),  # the held-out question again
        *[_source_row(f"What is disease {i} ?", f"Disease {i} is rare. It affects the skin.", f"disease {i}", f"d{i}")
          for i in range(5)],
    ]
    write(tmp_path / "source.jsonl", "".join(json.dumps(r) + "\n" for r in source))
    write(tmp_path / "held.jsonl", "".join(json.dumps(r) + "\n" for r in held))
    argv = [str(tmp_path / "source.jsonl"), "--heldout", str(tmp_path / "held.jsonl"), "--out", str(tmp_path / "out"),
            "--distractor-rows", "3", "--max-words", "7"]
    assert script.main(argv) == 0
    first = (tmp_path / "out" / "corpus.jsonl").read_bytes()
    passages = rows(tmp_path / "out" / "corpus.jsonl")
    assert script.main(argv) == 0 and (tmp_path / "out" / "corpus.jsonl").read_bytes() == first  # deterministic
    texts = [p["text"] for p in passages]
    assert "What are the symptoms of gout ?\nAttacks start at night." in texts  # 7 words at most: one sentence each
    assert "What are the symptoms of gout ?\nThe big toe swells and turns red." in texts
    # left out: the held-out row, its question asked again, and the row repeating its answer (though each of
    # that row's 7-word passages would hold less than half of it)
    assert not any(p["doc_id"] in ("1", "3", "4") for p in passages)
    assert sum(p["focus"].startswith("disease") for p in passages) == 3 * 2  # 3 distractor rows, 2 passages each
    assert "passages written | 8 |" in capsys.readouterr().out
