"""Time estimates, so an instructor knows whether to talk or to wait.

The throughputs below were measured on the reference machines named beside them; on a CPU the
estimate scales with the number of cores (sub-linearly: attention and tokenisation do not scale
perfectly). They are estimates, printed as such, not promises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Training throughput in samples/s (classifier) on the reference hardware.
# CPU numbers: 2-core x86 laptop-class machine, fp32, dynamic padding, max_length 128.
CLF_TRAIN_SAMPLES_PER_S = {
    ("cpu", "minilm"): 28.0,  # all-MiniLM-L6-v2, MRPC-length pairs
    ("cpu", "bert-base"): 4.0,
    ("cuda", "minilm"): 900.0,
    ("cuda", "bert-base"): 250.0,  # T4 fp16; an A100/H100 is 3-6x faster
}
CLF_EVAL_SAMPLES_PER_S = {"cpu": 90.0, "cuda": 2000.0}
# SFT throughput in tokens/s (training), generation in new tokens/s per prompt (greedy, batched), and
# teacher-forced scoring (answer NLL) in tokens/s. ("cpu", "small") is SmolLM2-135M-Instruct in float32 on
# a 2-core machine (2026-12-02, docs/benchmarks.md): SFTTrainer ~190 tokens/s, batched generation ~40 new
# tokens/s in all (4 prompts' worth of one-prompt speed), forward passes ~600 tokens/s.
SFT_TOKENS_PER_S = {("cpu", "small"): 190.0, ("cuda", "8b"): 1300.0}
GEN_TOKENS_PER_S = {("cpu", "small"): 10.0, ("cuda", "8b"): 60.0}
NLL_TOKENS_PER_S = {("cpu", "small"): 600.0, ("cuda", "8b"): 6000.0}
LLM_TOKENS_PER_EXAMPLE = 130  # MedQuAD subset: system prompt + question + answer (data/medquad/README.md)
# Fixed costs per notebook (imports, model loading, kernels starting), seconds.
FIXED_S = {"cpu": 25.0, "cuda": 60.0}
QUANT_STEPS = 2  # notebook 03 on a CPU: steps timed for float32 and for 4-bit NF4 side by side


def cpu_scale() -> float:
    """Multiplier for CPU timings relative to the 2-core reference machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return (2.0 / max(1, min(cores, 16))) ** 0.7


def _model_kind(model: str) -> str:
    low = model.lower()
    if "bert-base" in low:
        return "bert-base"
    return "minilm"


def _llm_kind(profile) -> str:
    return "8b" if profile.device == "cuda" else "small"


def _scale(profile) -> float:
    return cpu_scale() if profile.device == "cpu" else 1.0


def classifier_train_seconds(profile, n_samples: int, epochs: float) -> float:
    rate = CLF_TRAIN_SAMPLES_PER_S[(profile.device, _model_kind(profile.clf_model))]
    return n_samples * epochs / rate * _scale(profile)


def classifier_eval_seconds(profile, n_samples: int) -> float:
    return n_samples / CLF_EVAL_SAMPLES_PER_S[profile.device] * _scale(profile)


def sft_train_seconds(profile, steps: int | None = None, tokens_per_example: int = LLM_TOKENS_PER_EXAMPLE) -> float:
    steps = profile.sft_max_steps if steps is None else steps
    tokens = steps * profile.sft_batch_size * profile.sft_grad_accum * tokens_per_example
    return tokens / SFT_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile)


def dpo_train_seconds(profile, steps: int | None = None, tokens_per_example: int = LLM_TOKENS_PER_EXAMPLE) -> float:
    """DPO steps: each pair is two sequences (chosen, rejected) trained like SFT examples, plus the
    reference's forward pass over both without gradients (about a third of a training pass)."""
    steps = profile.dpo_max_steps if steps is None else steps
    tokens = steps * profile.dpo_batch_size * 2 * tokens_per_example * 4 / 3
    return tokens / SFT_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile)


def generation_seconds(profile, n_prompts: int, new_tokens: int | None = None) -> float:
    new_tokens = profile.max_new_tokens if new_tokens is None else new_tokens
    rate = GEN_TOKENS_PER_S[(profile.device, _llm_kind(profile))]
    # batched generation: prompts share the forward passes, roughly 4 at a time on CPU
    return n_prompts * new_tokens / rate / (4 if profile.device == "cpu" else 8) * _scale(profile)


def nll_seconds(profile, n_rows: int) -> float:
    """Teacher-forced scoring of ``n_rows`` reference answers (one forward pass each, batched)."""
    return n_rows * LLM_TOKENS_PER_EXAMPLE / NLL_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile)


def human(seconds: float) -> str:
    if seconds < 60:
        return f"~{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"~{seconds / 60:.0f} min" if seconds >= 600 else f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"


def announce(what: str, seconds: float) -> str:
    """One line for the cell before a long step: how long, and whether to talk or wait."""
    hint = "run it and keep talking" if seconds > 90 else "short enough to wait for"
    line = f"[estimate] {what}: {human(seconds)} on this machine ({hint})"
    print(line)
    return line


@dataclass
class SeriesEstimate:
    per_notebook: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.per_notebook.values())

    def total_text(self) -> str:
        return human(self.total)


def _rows(n: int | None, full: int) -> int:
    return full if n is None else min(n, full)


def series_estimate(profile) -> SeriesEstimate:
    """Estimated wall time of each notebook in this profile on this machine."""
    fixed = FIXED_S[profile.device] * _scale(profile)
    hub_data = profile.clf_data_config is not None  # GLUE MRPC: 3,668 train / 408 validation
    n_train = _rows(profile.clf_train_rows, 3668 if hub_data else 1600)
    n_eval = _rows(profile.clf_eval_rows, 408 if hub_data else 400)
    n_scored = _rows(profile.llm_eval_rows, 200)  # data/medquad/test.jsonl
    n_prompts = _rows(profile.llm_generate_rows, n_scored)
    clf_eval = classifier_eval_seconds(profile, n_eval)
    full_ft = classifier_train_seconds(profile, n_train, profile.clf_epochs) + clf_eval * (profile.clf_epochs + 1)
    lora_ft = full_ft  # LoRA on every linear layer: the backward pass still runs through the whole model
    gen = generation_seconds(profile, n_prompts) + nll_seconds(profile, n_scored)
    sft = sft_train_seconds(profile)
    n_pairs = min(profile.dpo_train_pairs, 3000 if profile.llm_train_rows is None else profile.llm_train_rows)
    # 05: the SFT model answers the training and held-out questions (the pairs), both sides of every held-out
    # pair are scored before and after, the DPO model answers the held-out questions again, and DPO trains
    dpo = (generation_seconds(profile, 2 * n_prompts + n_pairs) + 2 * nll_seconds(profile, 4 * n_prompts)
           + dpo_train_seconds(profile))
    four_bit = 0.0 if profile.device == "cuda" else sft_train_seconds(profile, steps=2 * QUANT_STEPS) * 1.5 + fixed
    return SeriesEstimate(
        {
            "00_setup": 5.0 + fixed * 0.2,
            "01_baseline_evaluation": fixed + 2 * clf_eval + gen,
            "02_full_finetune_trainer": fixed + full_ft + lora_ft,
            "03_qlora_llama3_sft": fixed + sft + 2 * gen + four_bit,
            "04_inference_pipeline": fixed + 3 * gen + clf_eval,
            "05_preference_dpo": fixed + dpo,
        }
    )
