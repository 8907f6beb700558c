"""Build ``data/medquad-corpus/corpus.jsonl``: MedQuAD passages to retrieve from, none of them a held-out answer.

    .venv/bin/python scripts/build_medquad_corpus.py /path/to/medquad.jsonl [--heldout data/medquad/test.jsonl]
        [--out data/medquad-corpus] [--seed 0] [--max-words 60] [--parts 2] [--distractor-rows 600]

Notebook 06 and ``workshop rag`` answer the held-out questions of ``data/medquad/test.jsonl`` with passages
retrieved from this file in the prompt. The input is the same normalised MedQuAD JSONL that
``scripts/build_medquad.py`` reads. What this script does, in order:

1. **Held-out side.** Every source row about a held-out topic: its normalised focus is the focus of a held-out
   row, or it comes from the same source document (``collection``, ``doc_id``) as one. These are answers to
   *other* questions about the diseases the held-out questions ask about: what retrieval can bring and
   fine-tuning on the training topics cannot.
2. **Distractors.** A seeded sample of ``--distractor-rows`` source rows from topics with no held-out row
   (topics: the connected components of "same focus or same document", as in build_medquad.py).
3. **Never the held-out answer.** A row is left out when it *is* a held-out row, or asks a held-out question
   (the same words, ignoring case, spaces and punctuation). Each answer is cut into passages of whole sentences, at most
   ``--max-words`` words (a longer sentence is cut into pieces of that many words), and its first ``--parts`` passages are
   kept. A row whose whole answer holds more than half of the word 5-grams of any held-out answer is left out
   before it is cut (so no held-out answer is split over two passages), and so is any passage that holds that
   much (``workshop_utils.corpus.leaking_passages``, the rule ``workshop rag`` refuses a corpus by).
4. Every passage is written as ``question`` + newline + passage text in ``text``, with its ``focus`` (recall@k
   counts a retrieved passage as relevant when its focus is the question's) and where it came from.

The output is deterministic. If the output folder has a README.md with the count markers, its counts
section is rewritten.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "src", ROOT / "scripts"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from build_medquad import normalise_text, read_rows, topic_keys  # noqa: E402

from workshop_utils import DataError  # noqa: E402
from workshop_utils.corpus import leaking_passages, topic_key  # noqa: E402
from workshop_utils.paths import write_atomic  # noqa: E402
from workshop_utils.tables import markdown_table  # noqa: E402

FIELDS = ("text", "focus", "question", "qtype", "collection", "doc_id", "url", "part")
COUNTS_START = "<!-- counts:start (written by scripts/build_medquad_corpus.py) -->"
COUNTS_END = "<!-- counts:end -->"
_WORDS = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


def same_words(text: str) -> str:
    """A question reduced to its words (case, spaces and punctuation ignored): "Alpha-thalassemia ?" = "alpha thalassemia"."""
    return " ".join(_WORDS.findall(text.lower()))


def _pieces(sentence: str, max_words: int) -> list[str]:
    """A sentence, or a run-on one (a list without full stops) cut into ``max_words``-word pieces."""
    words = sentence.split()
    return [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)] or [sentence]


def passages_of(answer: str, max_words: int, parts: int) -> list[str]:
    """The first ``parts`` passages of whole sentences, each at most ``max_words`` words (a longer sentence is cut
    into pieces of that many words)."""
    sentences = [piece for whole in _SENTENCE.split(" ".join(answer.split())) for piece in _pieces(whole, max_words)]
    out: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        if current and len(" ".join(current).split()) + len(sentence.split()) > max_words:
            out.append(" ".join(current))
            current = []
            if len(out) == parts:
                return out
        current.append(sentence)
    if current and len(out) < parts:
        out.append(" ".join(current))
    return out


def _passages_of_row(row, max_words, parts):
    return [{"text": f"{row['instruction']}\n{text}", "focus": row["focus"], "question": row["instruction"],
             "qtype": row["qtype"], "collection": row["collection"], "doc_id": row["doc_id"], "url": row["url"], "part": part}
            for part, text in enumerate(passages_of(row["response"], max_words, parts))]


def build(rows, heldout, *, seed=0, max_words=60, parts=2, distractor_rows=600):
    """(passages, counts) under the rules of this module's docstring."""
    counts = Counter(read=len(rows), heldout=len(heldout))
    held_focus = {topic_key(r["focus"]) for r in heldout} - {""}
    held_docs = {(r["collection"], r["doc_id"]) for r in heldout}
    held_pairs = {(normalise_text(r["instruction"]), normalise_text(r["response"])) for r in heldout}
    held_questions = {same_words(r["instruction"]) for r in heldout}

    def about_heldout(row) -> bool:
        return topic_key(row["focus"]) in held_focus or (row["collection"], row["doc_id"]) in held_docs

    keys = topic_keys(rows)
    touched = {k for k, r in zip(keys, rows) if about_heldout(r)}
    near = [r for r in rows if about_heldout(r)]
    far = [r for k, r in zip(keys, rows) if k not in touched and r["response"].strip()]
    rng = random.Random(seed)
    far = [far[i] for i in sorted(rng.sample(range(len(far)), min(distractor_rows, len(far))))]
    counts.update(near_rows=len(near), distractor_rows=len(far))

    candidates = []
    for side, source in (("held-out topics", near), ("other topics", far)):
        for row in source:
            if (normalise_text(row["instruction"]), normalise_text(row["response"])) in held_pairs:
                counts["heldout_rows_left_out"] += 1
            elif same_words(row["instruction"]) in held_questions:
                counts["heldout_questions_left_out"] += 1
            elif row["response"].strip():
                candidates.append((side, row))
    held_answers = [r["response"] for r in heldout]
    # the whole answer first: cut into passages, a repeated held-out answer could hide in two halves
    leaky = {i for i, _ in leaking_passages([row["response"] for _, row in candidates], held_answers)}
    counts["leaking_rows_left_out"] = len(leaky)
    chosen = [(side, passage) for i, (side, row) in enumerate(candidates) if i not in leaky
              for passage in _passages_of_row(row, max_words, parts)]
    bad = {i for i, _ in leaking_passages([p["text"] for _, p in chosen], held_answers)}
    counts["leaking_passages_dropped"] = len(bad)
    kept = [(side, p) for i, (side, p) in enumerate(chosen) if i not in bad]
    # one passage per text: the same paragraph appears on several pages
    seen: set[str] = set()
    passages = []
    for side, p in kept:
        key = normalise_text(p["text"])
        if key in seen:
            counts["duplicate_passages_dropped"] += 1
            continue
        seen.add(key)
        passages.append(p)
        counts[f"passages ({side})"] += 1
    rng.shuffle(passages)
    counts["passages"] = len(passages)
    counts["heldout_topics_covered"] = len({topic_key(p["focus"]) for p in passages} & held_focus)
    counts["heldout_topics"] = len(held_focus)
    counts["max_words"] = max(len(p["text"].split("\n", 1)[1].split()) for p in passages)
    return passages, counts


def counts_markdown(counts, args) -> str:
    rows = [("source rows read", counts["read"]),
            ("rows about a held-out topic (focus or source document of a held-out row)", counts["near_rows"]),
            ("rows from other topics (seeded sample: distractors)", counts["distractor_rows"]),
            ("held-out rows themselves, left out", -counts["heldout_rows_left_out"]),
            ("rows asking a held-out question, left out", -counts["heldout_questions_left_out"]),
            ("rows whose answer holds > half of a held-out answer's 5-grams, left out", -counts["leaking_rows_left_out"]),
            ("passages holding > half of a held-out answer's 5-grams, dropped", -counts["leaking_passages_dropped"]),
            ("duplicate passages dropped", -counts["duplicate_passages_dropped"]),
            ("passages written, about held-out topics", counts["passages (held-out topics)"]),
            ("passages written, about other topics", counts["passages (other topics)"]),
            ("passages written", counts["passages"])]
    lines = markdown_table(["step", "count"], [(name, f"{value:,}") for name, value in rows]).splitlines()
    lines += ["", f"Held-out topics (normalised focus of a held-out row) with at least one passage: "
              f"{counts['heldout_topics_covered']:,} of {counts['heldout_topics']:,}. Options: `--seed {args.seed} "
              f"--max-words {args.max_words} --parts {args.parts} --distractor-rows {args.distractor_rows}`; longest "
              f"passage {counts['max_words']} words after its question line."]
    return "\n".join(lines)


def write_outputs(passages, counts, args) -> list[Path]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.jsonl"
    write_atomic(corpus, "".join(json.dumps({k: p[k] for k in FIELDS}, ensure_ascii=False) + "\n" for p in passages))
    written = [corpus]
    readme = out / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        start, end = text.find(COUNTS_START), text.find(COUNTS_END)
        if start != -1 and end > start:
            body = text[: start + len(COUNTS_START)] + "\n" + counts_markdown(counts, args) + "\n" + text[end:]
            if body != text:
                write_atomic(readme, body)
                written.append(readme)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="MedQuAD JSONL (one question/answer object per line)")
    parser.add_argument("--heldout", default=str(ROOT / "data" / "medquad" / "test.jsonl"),
                        help="the held-out questions (default: data/medquad/test.jsonl)")
    parser.add_argument("--out", default=str(ROOT / "data" / "medquad-corpus"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-words", type=int, default=60, help="words per passage at most (whole sentences)")
    parser.add_argument("--parts", type=int, default=2, help="passages kept from the start of each answer")
    parser.add_argument("--distractor-rows", type=int, default=600, help="rows sampled from topics with no held-out row")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.input)
        heldout = read_rows(args.heldout)
        passages, counts = build(rows, heldout, seed=args.seed, max_words=args.max_words, parts=args.parts,
                                 distractor_rows=args.distractor_rows)
        written = write_outputs(passages, counts, args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(counts_markdown(counts, args))
    for path in written:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
