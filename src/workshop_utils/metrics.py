"""Metrics that work offline, through the libraries attendees will meet again.

* accuracy and F1 as ``evaluate`` modules (``load_metric``): the Hub's ``accuracy``/``f1`` when the Hub
  answers, the workshop's own modules of the same name (``workshop_utils/evaluate_metrics``) when it does
  not; both compute with scikit-learn;
* ROUGE-L from the maintained ``rouge_score`` package.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

LOCAL_METRICS = Path(__file__).resolve().parent / "evaluate_metrics"
_loaded: dict[str, Any] = {}


def load_metric(name: str):
    """``evaluate.load(name)``, or offline the workshop's module of the same name, loaded from its folder.

    Loaded once per process and kept in memory (no cache files), so several processes of one run never wait on
    each other's locks.
    """
    import evaluate

    from .profiles import hub_status

    if name in _loaded:
        return _loaded[name]
    if not (LOCAL_METRICS / name / f"{name}.py").is_file():
        raise ValueError(f"no local module for metric {name!r}; available: "
                         + ", ".join(sorted(p.name for p in LOCAL_METRICS.iterdir() if (p / f"{p.name}.py").is_file())))
    module = None
    if hub_status()[0]:
        try:
            module = evaluate.load(name, keep_in_memory=True)
        except Exception:  # the Hub answered the probe but not this request: the local module computes the same
            pass
    _loaded[name] = module or evaluate.load(str(LOCAL_METRICS / name), keep_in_memory=True)
    return _loaded[name]


def metric_path(name: str, profile=None) -> str:
    """What to hand ``evaluate.load``: the Hub's module name (``"accuracy"``) when the profile has the Hub, the
    workshop's module of the same name (its folder in ``workshop_utils/evaluate_metrics``) offline."""
    from .profiles import hub_status

    if not (LOCAL_METRICS / name / f"{name}.py").is_file():
        raise ValueError(f"no local module for metric {name!r}; available: "
                         + ", ".join(sorted(p.name for p in LOCAL_METRICS.iterdir() if (p / f"{p.name}.py").is_file())))
    hub = profile.hub if profile is not None else hub_status()[0]
    return name if hub else str(LOCAL_METRICS / name)


def accuracy_f1(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> dict[str, float]:
    """Accuracy and F1 of the positive class, with scikit-learn (what the ``evaluate`` modules call)."""
    from sklearn.metrics import accuracy_score, f1_score

    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.shape != refs.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {refs.shape[0]} references")
    if not len(refs):
        return {"accuracy": 0.0, "f1": 0.0}
    # F1 of ``positive`` against every other label, so it is defined for any number of classes
    return {"accuracy": float(accuracy_score(refs, preds)),
            "f1": float(f1_score(refs == positive, preds == positive, zero_division=0))}


def majority_baseline(train_labels: Iterable[int], eval_labels: Sequence[int]) -> dict[str, float]:
    """Always predict the most frequent training label: the floor any model must beat."""
    train_labels = list(train_labels)
    majority = max(set(train_labels), key=train_labels.count)
    return {**accuracy_f1([majority] * len(eval_labels), eval_labels), "predicts": int(majority)}


def confusion(predictions: Sequence[int], references: Sequence[int], n_classes: int = 2) -> list[list[int]]:
    """Rows: true label; columns: predicted label (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(references, predictions, labels=list(range(n_classes))).tolist()


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge_score, with stemming), 0..1."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0


def semantic_similarity(predictions: Sequence[str], references: Sequence[str], encoder) -> float:
    """SemScore (Aynetdinov & Akbik, 2024): the mean cosine similarity of each answer's sentence embedding to
    its reference's, from a sentence-transformers ``encoder`` (the paper uses all-mpnet-base-v2; the workshop
    uses the all-MiniLM-L6-v2 it ships). 1 = same meaning as far as the encoder can tell; an empty answer
    counts as 0."""
    if not predictions:
        return 0.0
    vectors = encoder.encode(list(predictions) + list(references), normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
    answers, refs = vectors[: len(predictions)], vectors[len(predictions):]
    cosines = (answers * refs).sum(axis=1)
    return float(np.mean([c if p.strip() else 0.0 for c, p in zip(cosines, predictions)]))


def paired_difference(after: Sequence[float], before: Sequence[float], *, resamples: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """The mean per-question change ``after - before`` with a 95% bootstrap interval (questions resampled,
    seeded) and the share of questions whose value went down."""
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if diff.size == 0:
        raise ValueError("no questions to compare")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "share_lower": float((diff < 0).mean()),
            "questions": int(diff.size)}


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


def training_state_bytes(model, optimizer=None) -> dict[str, int]:
    """What training holds besides activations, in bytes: ``{"weights", "gradients", "optimizer_state"}``.

    * ``weights``: every parameter of the model, frozen or not;
    * ``gradients``: one gradient per *trainable* parameter, of the parameter's dtype (what ``backward`` fills
      during a step; ``Trainer`` frees them between steps);
    * ``optimizer_state``: the optimizer's own state tensors (``optimizer.state``; AdamW keeps two moments per
      trainable parameter and a step count), so 0 before the first step or without an optimizer.

    Unlike a process's resident memory these depend only on the model and what it trains, which is what
    LoRA changes: ``training_state_bytes(trainer.model, trainer.optimizer)`` after ``trainer.train()``.
    """
    import torch

    if not hasattr(model, "parameters"):
        raise TypeError(f"training_state_bytes needs a torch model (with .parameters()), got {type(model).__name__}")
    params = list(model.parameters())  # shared (tied) parameters are listed once
    state = getattr(optimizer, "state", None) or {}
    return {
        "weights": int(sum(p.numel() * p.element_size() for p in params)),
        "gradients": int(sum(p.numel() * p.element_size() for p in params if p.requires_grad)),
        "optimizer_state": int(sum(t.numel() * t.element_size() for s in state.values()
                                   for t in s.values() if torch.is_tensor(t))),
    }
