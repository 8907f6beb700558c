"""Metrics that work offline.

``evaluate.load("glue", "mrpc")`` downloads the metric's code from the Hub, which fails without a
network; accuracy and F1 are a few lines of numpy, and ROUGE-L comes from the maintained
``rouge_score`` package, so every score here is computed locally.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterable, Sequence

import numpy as np


def accuracy_f1(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> dict[str, float]:
    """Accuracy and F1 of the positive class (GLUE MRPC reports both)."""
    preds = np.asarray(predictions)
    refs = np.asarray(references)
    if preds.shape != refs.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {refs.shape[0]} references")
    tp = int(np.sum((preds == positive) & (refs == positive)))
    fp = int(np.sum((preds == positive) & (refs != positive)))
    fn = int(np.sum((preds != positive) & (refs == positive)))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"accuracy": float(np.mean(preds == refs)) if len(refs) else 0.0, "f1": float(f1)}


def compute_classification_metrics(eval_pred) -> dict[str, float]:
    """``compute_metrics`` for ``Trainer``: logits -> argmax -> accuracy and F1."""
    logits, labels = eval_pred
    if isinstance(logits, tuple):
        logits = logits[0]
    return accuracy_f1(np.argmax(logits, axis=-1), labels)


def majority_baseline(train_labels: Iterable[int], eval_labels: Sequence[int]) -> dict[str, float]:
    """Always predict the most frequent training label: the floor any model must beat."""
    train_labels = list(train_labels)
    majority = max(set(train_labels), key=train_labels.count)
    return {**accuracy_f1([majority] * len(eval_labels), eval_labels), "predicts": int(majority)}


def confusion(predictions: Sequence[int], references: Sequence[int], n_classes: int = 2) -> list[list[int]]:
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    for p, r in zip(predictions, references):
        matrix[int(r), int(p)] += 1
    return matrix.tolist()


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge_score, with stemming), 0..1."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0


def peak_memory_bytes(device: str | None = None) -> int:
    """Peak GPU memory allocated by torch on CUDA; otherwise the process's peak resident set size."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # ru_maxrss is KiB on Linux


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


@contextmanager
def measure(device: str | None = None):
    """Wall time and peak memory of a block: ``with measure() as m: ...; m["seconds"], m["peak_memory_bytes"]``."""
    reset_peak_memory()
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        out["peak_memory_bytes"] = peak_memory_bytes(device)


def eos_rate(stopped: Sequence[bool]) -> float:
    """Share of generated answers that ended with an end-of-sequence token before the length limit.

    A chat model that never learned to emit EOS keeps talking until ``max_new_tokens``: its answers
    run on (and cost time) even when their first sentence is right.
    """
    flags = [bool(s) for s in stopped]
    return sum(flags) / len(flags) if flags else 0.0
