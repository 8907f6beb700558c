"""Build ``data/medquad/{train,test}.jsonl``: a short-answer MedQuAD subset, held out by topic.

    .venv/bin/python scripts/build_medquad.py /path/to/medquad.jsonl [--out data/medquad] [--seed 0]
        [--test-rows 200] [--max-answer-tokens 120] [--min-answer-tokens 20] [--max-train-rows 3000]

The input is the normalised MedQuAD JSONL (one question/answer pair per line with the fields
instruction, response, focus, qtype, collection, doc_id, url; other fields are ignored, and so is its
``split`` field). What the script does, in order:

1. **Select, don't cut.** A row is kept when its answer plus one EOS token is at most
   ``--max-answer-tokens`` and at least ``--min-answer-tokens`` SmolLM2-135M-Instruct tokens and
   ends like a sentence (``.``, ``!`` or ``?``, optionally followed by ``)`` or ``"``). No answer is
   shortened, so every answer the model trains on is complete and ends where its EOS is.
2. **No duplicate answers.** Of the rows whose answers are equal (ignoring case and runs of
   whitespace) only the first is kept.
3. **Topics.** Two rows are in the same topic when they share a normalised focus or the same
   (collection, doc_id); topics are the connected components of that relation.
4. **Held-out split by topic.** The sorted topic keys are shuffled with ``random.Random(seed)``
   and whole topics move to test until test has about ``--test-rows`` usable rows.
5. **No near-duplicates in test.** A test row is dropped when its question equals a question outside
   the test topics, or its answer is a near-duplicate of an answer outside them: equal after the
   focus is replaced by a placeholder (and case and whitespace are normalised), or sharing more than
   half of their word 5-grams (Jaccard > 0.5). MedQuAD's GHR "inheritance" and "frequency" answers
   are templates that differ only in the disease name; without this they would leak.
6. Train is everything outside the test topics, capped at ``--max-train-rows`` by a seeded sample.

The output is deterministic: the same input and options give byte-identical files. If the output
folder has a README.md with the count markers, its counts section is rewritten as well.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from workshop_utils import DataError  # noqa: E402
from workshop_utils.tables import markdown_table  # noqa: E402

FIELDS = ("instruction", "response", "focus", "qtype", "collection", "doc_id", "url")
PLACEHOLDER = "<focus>"
SHINGLE = 5
JACCARD_LIMIT = 0.5
COUNTS_START = "<!-- counts:start (written by scripts/build_medquad.py) -->"
COUNTS_END = "<!-- counts:end -->"

_SENTENCE_END = re.compile(r"[.!?][)\"]?$")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_NOT_WORD = re.compile(r"[^\w\s]|_")
_WORDS = re.compile(re.escape(PLACEHOLDER) + r"|\w+")


# --------------------------------------------------------------------------- reading
def read_rows(path: Path | str) -> list[dict[str, str]]:
    """The input rows (only :data:`FIELDS`, whitespace collapsed); a malformed line is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; pass the MedQuAD JSONL file (e.g. medquad.jsonl)")
    rows = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: line {line_no}: not valid UTF-8; re-save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {line_no}: not valid JSON ({exc.msg} at character {exc.colno}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(item, dict):
                raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(item).__name__}")
            for name in FIELDS:
                if name not in item:
                    raise DataError(f"{path}: line {line_no}: missing field '{name}' (found: {', '.join(item)})")
                if not isinstance(item[name], str):
                    raise DataError(
                        f"{path}: line {line_no}: field '{name}' should be text, got {type(item[name]).__name__}"
                    )
            rows.append({name: " ".join(item[name].split()) for name in FIELDS})
    if not rows:
        raise DataError(f"{path}: file is empty; it needs one JSON object per line")
    return rows


# --------------------------------------------------------------------------- normalisation
def normalise_focus(focus: str) -> str:
    """Lowercase, without possessive 's and punctuation, single spaces: "Parkinson's Disease" -> "parkinson disease"."""
    text = _POSSESSIVE.sub("", focus.lower())
    return " ".join(_NOT_WORD.sub(" ", text).split())


def normalise_text(text: str) -> str:
    """What the loader compares: case and runs of whitespace ignored."""
    return " ".join(text.split()).lower()


def normalise_answer(answer: str, focus: str) -> str:
    """The answer with its focus replaced by a placeholder, lowercased, whitespace collapsed."""
    answer, focus = " ".join(answer.split()), " ".join(focus.split())
    if focus:
        answer = re.sub(re.escape(focus), PLACEHOLDER, answer, flags=re.IGNORECASE)
    return normalise_text(answer)


def shingles(normalised: str, n: int = SHINGLE) -> frozenset[tuple[str, ...]]:
    words = _WORDS.findall(normalised)
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


def ends_like_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


# --------------------------------------------------------------------------- tokens
def load_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer the token budget is counted with."""
    from transformers import AutoTokenizer

    from workshop_utils.assets import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path())


def answer_token_counts(tokenizer, answers: Sequence[str]) -> list[int]:
    """Tokens of each answer plus one for the EOS token that ends it in training."""
    if not answers:
        return []
    ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return [len(x) + 1 for x in ids]


def question_token_counts(tokenizer, questions: Sequence[str]) -> list[int]:
    if not questions:
        return []
    return [len(x) for x in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]


# --------------------------------------------------------------------------- topics
def topic_keys(rows: Sequence[dict[str, str]]) -> list[str]:
    """For each row, the key of its topic (the smallest normalised focus, or doc key, in its component).

    Rows are linked when they share a normalised focus or a (collection, doc_id); an empty focus
    links nothing.
    """
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        focus = normalise_focus(row["focus"])
        links = [("doc", f"{row['collection']}/{row['doc_id']}")]
        if focus:
            links.append(("focus", focus))
        for link in links:
            if link in first:
                union(i, first[link])
            else:
                first[link] = i
    names: dict[int, str] = {}
    for i, row in enumerate(rows):
        root = find(i)
        name = normalise_focus(row["focus"]) or f"{row['collection']}/{row['doc_id']}"
        if root not in names or name < names[root]:
            names[root] = name
    return [names[find(i)] for i in range(len(rows))]


# --------------------------------------------------------------------------- near duplicates
class AnswerIndex:
    """Answers (normalised, with word 5-grams) that a held-out answer must not repeat or nearly repeat.

    Lookups use prefix filtering: if Jaccard(A, B) > t then B contains one of the first
    ``|A| - floor(t * |A|)`` 5-grams of A in any fixed order, so only rows holding one of those
    (rarest-first) 5-grams need the exact comparison.
    """

    def __init__(self, rows: Sequence[dict[str, str]]):
        self.texts = [normalise_answer(r["response"], r["focus"]) for r in rows]
        self.grams = [shingles(t) for t in self.texts]
        self.by_text: dict[str, list[int]] = defaultdict(list)
        self.by_gram: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, (text, grams) in enumerate(zip(self.texts, self.grams)):
            self.by_text[text].append(i)
            for g in grams:
                self.by_gram[g].append(i)

    def _prefix(self, grams: frozenset) -> list[tuple[str, ...]]:
        ordered = sorted(grams, key=lambda g: (len(self.by_gram.get(g, ())), g))
        return ordered[: len(ordered) - int(JACCARD_LIMIT * len(ordered))]

    def match(self, row: dict[str, str], allowed: Callable[[int], bool]) -> int | None:
        """The first indexed row (among ``allowed``) that ``row``'s answer nearly repeats, or None."""
        text = normalise_answer(row["response"], row["focus"])
        for j in self.by_text.get(text, ()):
            if allowed(j):
                return j
        grams = shingles(text)
        candidates = sorted({j for g in self._prefix(grams) for j in self.by_gram.get(g, ())})
        for j in candidates:
            if allowed(j) and jaccard(grams, self.grams[j]) > JACCARD_LIMIT:
                return j
        return None


# --------------------------------------------------------------------------- building
@dataclass
class Build:
    train: list[dict[str, str]]
    test: list[dict[str, str]]
    counts: dict[str, int] = field(default_factory=dict)


def select_rows(rows: Sequence[dict[str, str]], tokenizer, *, min_tokens: int, max_tokens: int):
    """Rows whose whole answer fits the budget and ends like a sentence (nothing is cut)."""
    counts = answer_token_counts(tokenizer, [r["response"] for r in rows])
    kept = [
        (row, n) for row, n in zip(rows, counts)
        if min_tokens <= n <= max_tokens and ends_like_sentence(row["response"])
    ]
    return [r for r, _ in kept], [n for _, n in kept]


def drop_duplicate_answers(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[str] = set()
    out = []
    for row in rows:
        key = normalise_text(row["response"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def build(
    rows: Sequence[dict[str, str]],
    tokenizer,
    *,
    seed: int = 0,
    test_rows: int = 200,
    max_answer_tokens: int = 120,
    min_answer_tokens: int = 20,
    max_train_rows: int | None = 3000,
) -> Build:
    """The train/test split of ``rows`` under the rules in this module's docstring."""
    counts = {"read": len(rows)}
    selected, tokens = select_rows(rows, tokenizer, min_tokens=min_answer_tokens, max_tokens=max_answer_tokens)
    counts["kept_by_length"] = len(selected)
    pool = drop_duplicate_answers(selected)
    counts["duplicates_dropped"] = len(selected) - len(pool)
    answer_tokens = {normalise_text(r["response"]): n for r, n in zip(selected, tokens)}

    keys = topic_keys(pool)
    members: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    order = sorted(members)
    rng = random.Random(seed)
    rng.shuffle(order)

    index = AnswerIndex(pool)
    questions: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(pool):
        questions[normalise_text(row["instruction"])].append(i)
    in_test = [False] * len(pool)

    def outside(j: int) -> bool:
        return not in_test[j]

    def leaks(i: int) -> str | None:
        if any(outside(j) for j in questions[normalise_text(pool[i]["instruction"])]):
            return "question"
        if index.match(pool[i], outside) is not None:
            return "answer"
        return None

    # Move whole topics to test until enough of their rows survive the leak check. Moving more
    # topics only shrinks what the survivors are compared with, so survivors stay survivors.
    test_topics: list[str] = []
    usable = 0
    for key in order:
        if usable >= test_rows or len(test_topics) == len(order) - 1:
            break
        test_topics.append(key)
        for i in members[key]:
            in_test[i] = True
        usable += sum(1 for i in members[key] if leaks(i) is None)
    # final decision, against everything outside the chosen test topics
    test_idx = [i for key in test_topics for i in members[key]]
    reasons = {i: leaks(i) for i in test_idx}
    counts["test_topic_rows"] = len(test_idx)
    counts["near_duplicates_dropped"] = sum(1 for r in reasons.values() if r == "answer")
    counts["shared_questions_dropped"] = sum(1 for r in reasons.values() if r == "question")

    test_idx = sorted(i for i in test_idx if reasons[i] is None)
    rng.shuffle(test_idx)  # before the cap, so the cap never changes the test file
    train_idx = [i for i in range(len(pool)) if not in_test[i]]
    counts["train_pool"] = len(train_idx)
    if max_train_rows is not None and len(train_idx) > max_train_rows:
        train_idx = sorted(rng.sample(train_idx, max_train_rows))
    rng.shuffle(train_idx)
    train = [pool[i] for i in train_idx]
    test = [pool[i] for i in test_idx]
    counts["train_rows"], counts["test_rows"] = len(train), len(test)
    counts["train_topics"] = len(set(topic_keys(train)))
    counts["test_topics"] = len(set(topic_keys(test)))
    final = train + test
    counts["longest_question_tokens"] = max(question_token_counts(tokenizer, [r["instruction"] for r in final]), default=0)
    counts["longest_answer_tokens"] = max((answer_tokens[normalise_text(r["response"])] for r in final), default=0)
    return Build(train, test, counts)


# --------------------------------------------------------------------------- writing
def jsonl_bytes(rows: Iterable[dict[str, str]]) -> bytes:
    return "".join(json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _table(title: str, header: Sequence[str], lines: Iterable[Sequence[object]]) -> list[str]:
    shown = [[name, *(f"{v:,}" if isinstance(v, int) else v for v in values)] for name, *values in lines]
    return markdown_table([title, *header], shown).splitlines()


def counts_markdown(result: Build) -> str:
    """The data card's counts section (parsed back by tests/data/test_medquad_data.py)."""
    c = result.counts
    capped = c["train_pool"] - c["train_rows"]
    lines = _table("step", ["rows"], [
        ("read from the source", c["read"]),
        ("answers within the token budget and ending a sentence", c["kept_by_length"]),
        ("duplicate answers dropped", -c["duplicates_dropped"]),
        ("test: near-duplicate answers dropped", -c["near_duplicates_dropped"]),
        ("test: questions also asked in train dropped", -c["shared_questions_dropped"]),
        ("train: left out by the seeded cap", -capped),
        ("written (train + test)", c["train_rows"] + c["test_rows"]),
    ])
    lines += ["", f"Longest question: {c['longest_question_tokens']} tokens; longest answer: "
              f"{c['longest_answer_tokens']} tokens including EOS (SmolLM2-135M-Instruct tokenizer).", ""]
    splits = {"train": result.train, "test": result.test}
    lines += _table("split", ["rows", "topics"],
                   [(s, len(rows), len(set(topic_keys(rows)))) for s, rows in splits.items()])
    for column in ("qtype", "collection"):
        per = {s: Counter(r[column] for r in rows) for s, rows in splits.items()}
        names = sorted(set(per["train"]) | set(per["test"]), key=lambda n: (-per["train"][n] - per["test"][n], n))
        lines += [""] + _table(column, ["train", "test"], [(n, per["train"][n], per["test"][n]) for n in names])
    return "\n".join(lines)


def write_outputs(result: Build, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in (("train", result.train), ("test", result.test)):
        path = out / f"{split}.jsonl"
        path.write_bytes(jsonl_bytes(rows))
        written.append(path)
    readme = out / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        start, end = text.find(COUNTS_START), text.find(COUNTS_END)
        if start != -1 and end > start:
            body = text[: start + len(COUNTS_START)] + "\n" + counts_markdown(result) + "\n" + text[end:]
            if body != text:
                readme.write_text(body, encoding="utf-8")
                written.append(readme)
    return written


def main(argv: list[str] | None = None, tokenizer=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="MedQuAD JSONL (one question/answer object per line)")
    parser.add_argument("--out", default=str(ROOT / "data" / "medquad"), help="output folder (default: data/medquad)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-rows", type=int, default=200, help="about this many held-out rows")
    parser.add_argument("--max-answer-tokens", type=int, default=120, help="answer + EOS at most this many tokens")
    parser.add_argument("--min-answer-tokens", type=int, default=20, help="answer + EOS at least this many tokens")
    parser.add_argument("--max-train-rows", type=int, default=3000, help="cap train with a seeded sample (0: no cap)")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.input)
        tokenizer = tokenizer or load_tokenizer()
        result = build(
            rows, tokenizer, seed=args.seed, test_rows=args.test_rows, max_answer_tokens=args.max_answer_tokens,
            min_answer_tokens=args.min_answer_tokens, max_train_rows=args.max_train_rows or None,
        )
        if not result.train or not result.test:
            raise DataError(
                f"{args.input}: the rules leave {len(result.train)} train and {len(result.test)} test rows; "
                "loosen --max-answer-tokens or --test-rows"
            )
        written = write_outputs(result, Path(args.out))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = result.counts
    print(f"read {c['read']:,} rows")
    print(f"kept by length ({args.min_answer_tokens}-{args.max_answer_tokens} tokens incl. EOS, "
          f"ending a sentence): {c['kept_by_length']:,}")
    print(f"duplicate answers dropped: {c['duplicates_dropped']:,}")
    print(f"test topics hold {c['test_topic_rows']:,} rows; dropped from test: "
          f"{c['near_duplicates_dropped']:,} near-duplicate answers, {c['shared_questions_dropped']:,} shared questions")
    capped = f" (sampled from {c['train_pool']:,})" if c["train_pool"] > c["train_rows"] else ""
    print(f"train: {c['train_rows']:,} rows{capped}, {c['train_topics']:,} topics")
    print(f"test: {c['test_rows']:,} rows, {c['test_topics']:,} topics")
    print(f"longest question {c['longest_question_tokens']} tokens, "
          f"longest answer {c['longest_answer_tokens']} tokens incl. EOS")
    for path in written:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
