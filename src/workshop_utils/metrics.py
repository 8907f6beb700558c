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
def measure(device: str | None = None, interval: float = 0.05):
    """Wall time and peak memory of a block: ``with measure() as m: ...; m["seconds"], m["peak_memory_bytes"]``.

    On a GPU the peak is torch's allocator peak since the block began. On a CPU it is the largest resident
    set size of the process sampled every ``interval`` seconds *during the block* (the process's lifetime
    peak would still remember whatever an earlier cell loaded).
    """
    import threading

    import psutil

    reset_peak_memory()
    on_gpu = (device or ("cuda" if _cuda() else "cpu")) == "cuda"
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(interval)

    sampler = None if on_gpu else threading.Thread(target=sample, daemon=True)
    if sampler is not None:
        sampler.start()
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        if sampler is not None:
            done.set()
            sampler.join()
            out["peak_memory_bytes"] = max(peak[0], proc.memory_info().rss)
        else:
            out["peak_memory_bytes"] = peak_memory_bytes("cuda")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def loops(text: str, n: int = 3, times: int = 3) -> bool:
    """Whether an answer repeats itself: some run of ``n`` words occurs ``times`` times or more.

    A small model pushed too hard by fine-tuning falls into loops ("a pharmacist, a pharmacist, a
    pharmacist, ..."); ROUGE-L barely notices, a reader does at once.
    """
    import re
    from collections import Counter

    words = re.findall(r"\w+", text.lower())
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def repetition_rate(texts: Sequence[str]) -> float:
    """Share of answers that loop (see :func:`loops`)."""
    return sum(loops(t) for t in texts) / len(texts) if texts else 0.0


def eos_rate(stopped: Sequence[bool]) -> float:
    """Share of generated answers that ended with an end-of-sequence token before the length limit.

    A chat model that never learned to emit EOS keeps talking until ``max_new_tokens``: its answers
    run on (and cost time) even when their first sentence is right.
    """
    flags = [bool(s) for s in stopped]
    return sum(flags) / len(flags) if flags else 0.0
