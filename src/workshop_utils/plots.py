"""Plots people would rather look at than read: training curves, before/after bars, confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() in ("agg", "") or not _in_notebook():
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def _finish(fig, save_to: Path | str | None):
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=110, bbox_inches="tight")
    return fig


def training_curve(log_history: Sequence[Mapping[str, Any]], metric: str = "eval_accuracy", title: str = "Training", save_to=None):
    """Training loss (and eval loss) per step on the left axis, an eval metric on the right."""
    plt = _plt()
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    scores = [(h["step"], h[metric]) for h in log_history if metric in h]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o--", label="eval loss", color="tab:orange")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if scores:
        ax2 = ax.twinx()
        ax2.plot(*zip(*scores), "s-", color="tab:green", label=metric.replace("eval_", "eval "))
        ax2.set_ylabel(metric.replace("eval_", ""))
        ax2.set_ylim(0, 1.02)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout()
    return _finish(fig, save_to)


def before_after(scores: Mapping[str, Mapping[str, float]], title: str = "Before and after fine-tuning", save_to=None):
    """Grouped bars: ``{"baseline": {"accuracy": .68, "f1": .81}, "fine-tuned": {...}}``."""
    plt = _plt()
    groups = list(scores)
    metrics = sorted({m for s in scores.values() for m, v in s.items() if isinstance(v, (int, float))})
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(metrics) * max(1, len(groups)) / 2, 3.4))
    for i, group in enumerate(groups):
        xs = [j + i * width for j in range(len(metrics))]
        values = [scores[group].get(m, 0.0) for m in metrics]
        bars = ax.bar(xs, values, width, label=group)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics)
    top = max([scores[g].get(m, 0.0) for g in groups for m in metrics] or [1.0])
    ax.set_ylim(0, max(1.1, top * 1.15))  # scores live in 0..1; a loss such as NLL can be larger
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _finish(fig, save_to)


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix", save_to=None):
    """Rows: true label; columns: predicted label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="black", fontsize=11)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, save_to)


def batch_benchmark(batch_sizes: Sequence[int], samples_per_second: Sequence[float], ms_per_sample: Sequence[float],
                    title: str = "Inference: batch size vs throughput and latency", save_to=None):
    """Two panels over batch size: throughput (samples/s, higher is better) and time per sample (ms)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.6, 3.0))
    labels = [str(b) for b in batch_sizes]
    left.bar(labels, samples_per_second, color="tab:green")
    left.set_xlabel("batch size")
    left.set_ylabel("samples / s")
    left.set_title("throughput")
    right.bar(labels, ms_per_sample, color="tab:purple")
    right.set_xlabel("batch size")
    right.set_ylabel("ms / sample")
    right.set_title("time per sample")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, save_to)


def reward_margins(curve: Mapping[str, Sequence[float]], title: str = "DPO: reward margins", save_to=None):
    """DPO's logged training metrics over steps: the mean reward margin (left axis) and the share of
    pairs with a positive margin (right axis). ``curve`` is :func:`workshop_utils.dpo.margin_curve`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    ax.plot(curve["step"], curve["margin"], marker="o", color="tab:blue", label="reward margin")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("reward margin (chosen - rejected)", color="tab:blue")
    right = ax.twinx()
    right.plot(curve["step"], curve["accuracy"], marker="s", color="tab:orange", label="reward accuracy")
    right.set_ylim(0, 1.05)
    right.set_ylabel("pairs with margin > 0", color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, save_to)


def rag_systems(nll_per_question: Mapping[str, Sequence[float]], similarity: Mapping[str, float],
                title: str = "Retrieval and fine-tuning", save_to=None):
    """Notebook 06: each system's per-question NLL of the references (boxes, the mean as a dot; lower is better)
    and its answers' SemScore (bars; higher is better)."""
    plt = _plt()
    names = list(nll_per_question)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    left.boxplot([list(nll_per_question[n]) for n in names], showfliers=False)
    left.plot(range(1, len(names) + 1), [sum(v) / len(v) for v in nll_per_question.values()], "o", color="tab:red",
              label="mean")
    left.set_xticks(range(1, len(names) + 1))
    left.set_xticklabels(names, fontsize=8)
    left.set_ylabel("NLL per token of the reference")
    left.set_title("reference answers (lower is better)", fontsize=9)
    left.legend(fontsize=8)
    bars = right.bar(range(len(names)), [similarity[n] for n in names], color="tab:green")
    for bar, name in zip(bars, names):
        right.annotate(f"{similarity[name]:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                       ha="center", va="bottom", fontsize=8)
    right.set_xticks(range(len(names)))
    right.set_xticklabels(names, fontsize=8, rotation=20)
    right.set_ylim(0, 1.05)
    right.set_title("answers: SemScore (higher is better)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, save_to)
