"""Retrieval corpora (notebook 06, `workshop rag`): passages read and checked with one-line errors, the topic a
focus names, and the rule that keeps held-out answers out of a corpus (word 5-grams).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from . import DataError
from .tables import read_table, require_columns

_POSSESSIVE = re.compile(r"['\u2019]s\b")
_NOT_WORD = re.compile(r"[^\w\s]|_")
_WORD = re.compile(r"\w+")
LEAK_SHARE = 0.5  # a passage holding more than this share of a held-out answer's word 5-grams leaks it


def topic_key(focus: str) -> str:
    """The topic a focus names: lowercase, without possessive 's and punctuation ("Parkinson's Disease" ->
    "parkinson disease"). scripts/build_medquad.py groups held-out topics by it; recall@k matches by it."""
    return " ".join(_NOT_WORD.sub(" ", _POSSESSIVE.sub("", focus.lower())).split())


def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def leaking_passages(passages: Sequence[str], answers: Sequence[str], share: float = LEAK_SHARE) -> list[tuple[int, int]]:
    """(passage index, answer index) for every passage holding more than ``share`` of an answer's word 5-grams
    (case ignored): a held-out answer, or most of it, that retrieval could paste into the prompt."""
    owners: dict[tuple[str, ...], list[int]] = {}
    answer_grams = [_grams(a) for a in answers]
    for j, grams in enumerate(answer_grams):
        for g in grams:
            owners.setdefault(g, []).append(j)
    leaks = []
    for i, passage in enumerate(passages):
        hits: dict[int, int] = {}
        for g in _grams(passage):
            for j in owners.get(g, ()):
                hits[j] = hits.get(j, 0) + 1
        leaks += [(i, j) for j, n in sorted(hits.items()) if n > share * len(answer_grams[j])]
    return leaks


def load_corpus(path: Path | str, held_out=None) -> list[dict[str, str]]:
    """Passages to retrieve from: a jsonl/csv/tsv file whose rows carry the passage in ``text`` (and may carry
    ``focus``, the topic). With ``held_out`` (rows with ``response``, from a file), a passage that holds a held-out
    answer is refused: a one-line error naming both rows."""
    table = read_table(path)
    require_columns(table, ["text"], what="field", options="a corpus row needs its passage in 'text'")
    for index, row in enumerate(table.rows):
        for f in ("text", "focus"):
            if f in row and row[f] is not None and not isinstance(row[f], str):
                raise DataError(f"{table.where(index, f)}: expected text, got {type(row[f]).__name__}")
    rows = [{"text": r["text"].strip(), "focus": (r.get("focus") or "").strip()} for r in table.rows]
    if held_out is not None:
        answers = list(held_out["response"])
        leaks = leaking_passages([r["text"] for r in rows], answers)
        if leaks:
            i, j = leaks[0]
            raise DataError(f"{table.where(i, 'text')}: holds most of held-out answer {j + 1} "
                            f"({answers[j][:60]!r}...); remove the passage: a held-out answer must never be retrievable")
    return rows
