"""The notebook series in one place: each notebook, what it teaches, the `workshop` command that runs its
recipe, and whether it ends with graded exercises.

The results record names a notebook's producer from here, the time estimates and the tests check their
lists against it, and a test checks that the README's table lists the same notebooks. Adding a notebook
means adding it here (and its estimate in ``estimates.series_estimate``, which a test ties to this list).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notebook:
    name: str  # the file stem in notebooks/, e.g. "02_full_finetune_trainer"
    topic: str
    command: str | None = None  # the `workshop` command that runs the same recipe, if any
    exercises: bool = True  # ends with graded exercises (tests/static/test_exercises.py)

    @property
    def number(self) -> str:
        return self.name[:2]

    def producer(self) -> str:
        """Where an attendee gets this notebook's results: the notebook, or the command that runs its recipe."""
        also = f" (or `workshop {self.command}`)" if self.command else ""
        return f"notebooks/{self.name}.ipynb{also}"


SERIES: tuple[Notebook, ...] = (
    Notebook("00_setup", "set-up check: hardware, versions, profile, time estimates", exercises=False),
    Notebook("01_baseline_evaluation", "the pretrained models measured before any fine-tuning"),
    Notebook("02_full_finetune_trainer", "full fine-tuning with Trainer, and LoRA beside it", command="train-classifier"),
    Notebook("03_qlora_llama3_sft", "QLoRA supervised fine-tuning of a chat model with TRL", command="sft"),
    Notebook("04_inference_pipeline", "inference: pipelines, adapters, merging, throughput, a live demo"),
    Notebook("05_preference_dpo", "preference tuning with DPO", command="dpo"),
    Notebook("06_rag_vs_finetune", "retrieval vs fine-tuning on the same unseen topics", command="rag"),
)


def notebook(name: str) -> Notebook | None:
    """The series entry for a notebook name (None for a name outside the series)."""
    return next((n for n in SERIES if n.name == name), None)
