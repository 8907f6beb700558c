"""Time estimates, so an instructor knows whether to talk or to wait.

The CPU throughputs below were measured on a reference machine; on another CPU each kind of work is
scaled by this machine's speed at it over the reference machine's, both timed by the calibration probe
(``estimates_probe``: a second or two, cached per hardware fingerprint). When the probe cannot run, the
estimate scales with the number of cores only, and says so. The GPU rates were never measured (no GPU
was lent): GPU estimates are printed as guesses. They are estimates, printed as such, not promises.

Measuring them (``python -m workshop_utils.tooling.estimates_check --probe`` / ``--check``) lives in
:mod:`workshop_utils.tooling.estimates_check`, which needs the profiles; this module does not import them (the
profile table imports it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

# CPU rates: fitted on the reference machine (REFERENCE_PROBE below) to a smoke `workshop run-all` taken alone
# on 2026-12-05 (325 s for the series; per notebook in docs/benchmarks.md): fixed cost and classifier training;
# the LLM rates (SFT, DPO, generation, NLL) re-fitted on 2026-12-06 to the offline series attendees run, taken
# alone (`WORKSHOP_PROFILE=offline workshop run-all`, 1494 s; docs/benchmarks.md), after generation moved to
# fastgen in batches of 32 and the answer cache. fp32, dynamic padding.
# Training throughput in samples/s (classifier).
CLF_TRAIN_SAMPLES_PER_S = {
    ("cpu", "minilm"): 36.0,  # all-MiniLM-L6-v2, MRPC-length pairs
    ("cpu", "bert-base"): 4.0,
    ("cuda", "minilm"): 900.0,
    ("cuda", "bert-base"): 250.0,  # T4 fp16; an A100/H100 is 3-6x faster
}
CLF_EVAL_SAMPLES_PER_S = {"cpu": 90.0, "cuda": 2000.0}
# SFT throughput in tokens/s (training), generation in new tokens/s per prompt (greedy, batched), and
# teacher-forced scoring (answer NLL) in tokens/s. ("cpu", "small") is SmolLM2-135M-Instruct in float32 on
# a 2-core machine: SFTTrainer ~290 example tokens/s (as LLM_TOKENS_PER_EXAMPLE counts them), batched
# generation ~320 answer-token slots/s in all (4 prompts' worth of an 80-per-prompt rate; answers that stop
# early leave the batch), forward passes ~800 tokens/s.
SFT_TOKENS_PER_S = {("cpu", "small"): 290.0, ("cuda", "8b"): 1300.0}
GEN_TOKENS_PER_S = {("cpu", "small"): 80.0, ("cuda", "8b"): 60.0}
NLL_TOKENS_PER_S = {("cpu", "small"): 800.0, ("cuda", "8b"): 6000.0}
LLM_TOKENS_PER_EXAMPLE = 130  # MedQuAD subset: system prompt + question + answer (data/medquad/README.md)
# a DPO sequence: prompt + the SFT model's own answer, often a plain-greedy answer that runs to the length cap
# (fitted: 05's 32 DPO steps, offline, 221-247 s on the reference machine)
DPO_TOKENS_PER_EXAMPLE = 200
# Fixed costs per notebook (imports, model loading, kernels starting), seconds.
FIXED_S = {"cpu": 10.0, "cuda": 60.0}
QUANT_STEPS = 2  # notebook 03 on a CPU: steps timed for float32 and for 4-bit NF4 side by side

# The calibration probe (estimates_probe.run_probe) on the reference machine: the medians of 5 fresh probes
# that `python -m workshop_utils.tooling.estimates_check --probe --runs 5` prints on an idle machine, pasted here with the
# date. The CPU rates above are re-fitted on the same machine from a `workshop run-all` (smoke) taken alone,
# with `python -m workshop_utils.tooling.estimates_check --check` (docs/benchmarks.md); on any other machine every estimate
# is scaled by its probe against these figures.
REFERENCE_PROBE = {"train384_gflops": 258.31, "train576_gflops": 256.32, "matmul_gflops": 332.35, "decode_gflops": 62.06,
                   "copy_gbs": 113.2, "python_mops": 8.36}
REFERENCE_PROBE_WHEN = ("2026-12-05, 2-core Intel Xeon (AVX512-BF16, AMX), torch 2.13.0 with 2 threads, idle (load 0.42): "
                        "`python -m workshop_utils.tooling.estimates_check --probe --runs 5`, medians")
# which probe figures stand for each kind of work (several: their geometric mean)
WORK_FIGURES = {
    "clf_train": ("train384_gflops",),  # MiniLM full fine-tuning
    "llm_train": ("train576_gflops",),  # SmolLM2 under LoRA: SFT, DPO
    "forward": ("matmul_gflops",),  # batched forward passes: classifier evaluation, answer NLL
    # greedy generation: batches of 32 rows through the whole model, one token at a time, so matrix products
    # and Python's per-token work. (The probe's 4-row output-layer product, decode_gflops, is memory-bound:
    # on one core of the reference machine it fell to 0.26x while generation ran at 0.64x, 2026-12-05.)
    "decode": ("matmul_gflops", "python_mops"),
    "fixed": ("python_mops", "copy_gbs"),  # imports, model loading, bookkeeping
}
SPEED_LIMITS = (0.05, 20.0)  # a probe ratio outside these is clipped: a glitch, not a machine
_CALIBRATION = None  # this process's Calibration, once measured or read from the cache
_LAST_DEVICE = "cpu"  # the device of the last estimate made: announce() labels a GPU guess as such


def cpu_scale() -> float:
    """Multiplier for CPU timings by core count alone (the fallback when the probe cannot run)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return (2.0 / max(1, min(cores, 16))) ** 0.7


@dataclass
class Calibration:
    """This machine's speed per kind of work relative to the reference machine (2.0 = twice as fast)."""

    speed: dict[str, float] = field(default_factory=dict)  # empty: the core-count fallback
    figures: dict[str, float] = field(default_factory=dict)  # this machine's probe figures
    source: str = ""  # "cached 2026-12-05", "measured now in 1.4 s"
    reason: str = ""  # why the probe was not used

    def factor(self, kind: str) -> float:
        """What to multiply the reference machine's seconds by, for ``kind`` of work (WORK_FIGURES)."""
        return 1.0 / self.speed[kind] if self.speed else cpu_scale()

    def line(self) -> str:
        if not self.speed:
            return f"this machine: not probed ({self.reason}); CPU estimates scaled by core count only"
        kinds = ", ".join(f"{k} {self.speed[k]:.2g}x" for k in ("clf_train", "llm_train", "decode"))
        return (f"this machine: {self.figures['matmul_gflops']:.0f} GFLOP/s fp32 matmul, {self.speed['forward']:.2g}x "
                f"the reference machine ({kinds}); estimates scaled by that [{self.source}]")


def _speeds(figures: dict[str, float]) -> dict[str, float]:
    low, high = SPEED_LIMITS
    return {kind: min(high, max(low, math.exp(sum(math.log(figures[f] / REFERENCE_PROBE[f]) for f in names) / len(names))))
            for kind, names in WORK_FIGURES.items()}


def calibration(refresh: bool = False) -> Calibration:
    """This machine against the reference one: probed once per hardware fingerprint (cached), or the
    core-count fallback with the reason (probe off with WORKSHOP_ESTIMATES_PROBE=0, failed, no reference)."""
    global _CALIBRATION
    if _CALIBRATION is not None and not refresh:
        return _CALIBRATION
    from . import estimates_probe

    if os.environ.get(estimates_probe.DISABLE_ENV, "").strip() == "0":
        _CALIBRATION = Calibration(reason=f"{estimates_probe.DISABLE_ENV}=0")
    elif not all(v > 0 for v in REFERENCE_PROBE.values()):
        _CALIBRATION = Calibration(reason="the reference machine's probe is not recorded")
    else:
        try:
            figures, source = estimates_probe.measured_figures(refresh)
            _CALIBRATION = Calibration(_speeds(figures), figures, source)
        except Exception as exc:  # any failure: the estimates still print, scaled by core count
            _CALIBRATION = Calibration(reason=f"probe failed: {type(exc).__name__}: {str(exc)[:120]}")
    return _CALIBRATION


def calibration_line(profile) -> str:
    """One line for notebook 00: what the estimates rest on, on this machine."""
    if profile.device != "cpu":
        return ("GPU estimates are guesses from published figures: no GPU rate in estimates.py was measured "
                "(time this run to replace them)")
    return calibration().line()


def _model_kind(model: str) -> str:
    low = model.lower()
    if "bert-base" in low:
        return "bert-base"
    return "minilm"


def _llm_kind(profile) -> str:
    return "8b" if profile.device == "cuda" else "small"


def _scale(profile, kind: str) -> float:
    global _LAST_DEVICE
    _LAST_DEVICE = profile.device
    return calibration().factor(kind) if profile.device == "cpu" else 1.0


def classifier_train_seconds(profile, n_samples: int, epochs: float) -> float:
    rate = CLF_TRAIN_SAMPLES_PER_S[(profile.device, _model_kind(profile.clf_model))]
    return n_samples * epochs / rate * _scale(profile, "clf_train")


def classifier_eval_seconds(profile, n_samples: int) -> float:
    return n_samples / CLF_EVAL_SAMPLES_PER_S[profile.device] * _scale(profile, "forward")


def sft_train_seconds(profile, steps: int | None = None, tokens_per_example: int = LLM_TOKENS_PER_EXAMPLE) -> float:
    steps = profile.sft_max_steps if steps is None else steps
    tokens = steps * profile.sft_batch_size * profile.sft_grad_accum * tokens_per_example
    return tokens / SFT_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile, "llm_train")


def dpo_train_seconds(profile, steps: int | None = None, tokens_per_example: int = DPO_TOKENS_PER_EXAMPLE) -> float:
    """DPO steps: each pair is two sequences (chosen, rejected) trained like SFT examples, plus the
    reference's forward pass over both without gradients (about a third of a training pass)."""
    steps = profile.dpo_max_steps if steps is None else steps
    tokens = steps * profile.dpo_batch_size * 2 * tokens_per_example * 4 / 3
    return tokens / SFT_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile, "llm_train")


def generation_seconds(profile, n_prompts: int, new_tokens: int | None = None) -> float:
    new_tokens = profile.max_new_tokens if new_tokens is None else new_tokens
    rate = GEN_TOKENS_PER_S[(profile.device, _llm_kind(profile))]
    # batched generation: prompts share the forward passes, roughly 4 at a time on CPU
    return n_prompts * new_tokens / rate / (4 if profile.device == "cpu" else 8) * _scale(profile, "decode")


def quantization_check_seconds(profile) -> float:
    """Notebook 03's 4-bit check on a CPU: QUANT_STEPS steps in float32 and in 4-bit NF4 (unpacking the 4-bit blocks
    makes those steps about half as slow again), plus loading the model twice."""
    return sft_train_seconds(profile, steps=2 * QUANT_STEPS) * 1.5


def batch_benchmark_seconds(profile, n_inputs: int, batch_sizes) -> float:
    """Notebook 04's throughput table: ``n_inputs`` classified at each batch size; batch size 1 runs about 5x slower
    per input than the batched evaluation the classifier rate was measured on."""
    return classifier_eval_seconds(profile, n_inputs) * (5 + len(batch_sizes))


def nll_seconds(profile, n_rows: int) -> float:
    """Teacher-forced scoring of ``n_rows`` reference answers (one forward pass each, batched)."""
    return n_rows * LLM_TOKENS_PER_EXAMPLE / NLL_TOKENS_PER_S[(profile.device, _llm_kind(profile))] * _scale(profile, "forward")


# notebook 06 / `workshop rag`: passages embedded per second by all-MiniLM-L6-v2 (cpu, 60-word passages), and
# the prompt tokens retrieval adds per passage (a 60-word passage, its question line and its number)
ENCODE_PASSAGES_PER_S = {"cpu": 95.0, "cuda": 2000.0}
RAG_TOKENS_PER_PASSAGE = 95
RAG_CORPUS_PASSAGES = 2086  # data/medquad-corpus/corpus.jsonl


def rag_seconds(profile, n_scored: int, n_answered: int, extra_tokens: float | None = None,
                plain_systems: int = 2) -> float:
    """Four systems scored (06): base and SFT on the questions (``plain_systems`` of them computed: 0 when 01's and
    03's scores of the same questions are in the answer cache), then with ``extra_tokens`` of passages in each prompt
    (default: the profile's k passages), which lengthen every teacher-forced row and every generation step."""
    extra = profile.rag_k * RAG_TOKENS_PER_PASSAGE if extra_tokens is None else extra_tokens
    plain = nll_seconds(profile, n_scored) + generation_seconds(profile, n_answered)
    longer = (LLM_TOKENS_PER_EXAMPLE + extra) / LLM_TOKENS_PER_EXAMPLE
    return plain_systems * plain + 2 * (nll_seconds(profile, n_scored) * longer
                                        + generation_seconds(profile, n_answered) * longer ** 0.5)


def human(seconds: float) -> str:
    if seconds < 60:
        return f"~{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"~{seconds / 60:.0f} min" if seconds >= 600 else f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"


def announce(what: str, seconds: float) -> str:
    """One line for the cell before a long step: how long, and whether to talk or wait."""
    hint = "run it and keep talking" if seconds > 90 else "short enough to wait for"
    guess = ", a guess: GPU rates not measured" if _LAST_DEVICE != "cpu" else ""
    line = f"[estimate] {what}: {human(seconds)} on this machine ({hint}{guess})"
    print(line)
    return line


@dataclass
class SeriesEstimate:
    per_notebook: dict[str, float] = field(default_factory=dict)
    measured: bool = True  # False: GPU rates, a guess from published figures

    @property
    def total(self) -> float:
        return sum(self.per_notebook.values())

    @property
    def label(self) -> str:
        return "estimate" if self.measured else "estimate (a guess: GPU not measured)"

    def total_text(self) -> str:
        return human(self.total) + ("" if self.measured else " (a guess: GPU rates not measured)")


def _rows(n: int | None, full: int) -> int:
    return full if n is None else min(n, full)


def series_estimate(profile) -> SeriesEstimate:
    """Estimated wall time of each notebook in this profile on this machine."""
    fixed = FIXED_S[profile.device] * _scale(profile, "fixed")
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
    # 05: the SFT model answers the training and held-out questions twice (plain greedy and guarded: the pairs),
    # the held-out references' NLL and both sides of every held-out pair are scored before and after, the DPO
    # model answers the held-out questions again under both decodings, and DPO trains
    # (the held-out answers with 03's decoding are 03's own "after" answers: reused from the answer cache)
    dpo = (generation_seconds(profile, 2 * n_pairs + 3 * n_prompts) + nll_seconds(profile, 6 * n_prompts)
           + dpo_train_seconds(profile))
    four_bit = 0.0 if profile.device == "cuda" else quantization_check_seconds(profile) + fixed
    return SeriesEstimate(
        {
            "00_setup": (5.0 + FIXED_S[profile.device] * 0.2) * _scale(profile, "fixed"),
            "01_baseline_evaluation": fixed + 2 * clf_eval + gen,
            "02_full_finetune_trainer": fixed + full_ft + lora_ft,
            # the series in order, as `workshop run-all` runs it: a result already in the answer cache (same model,
            # prompts and decoding) is read back, not computed. 03's "before" is 01's baseline.
            "03_qlora_llama3_sft": fixed + sft + gen + four_bit,
            # 04: 3 pipeline answers, the merge and its check, the merged model reloaded (base and fine-tuned
            # scores: 03's "before" and "after", from the cache)
            "04_inference_pipeline": 2 * fixed + generation_seconds(profile, 4) + clf_eval,
            "05_preference_dpo": fixed + dpo,
            # 06: the encoder embeds the corpus (cached for the next run), four systems scored
            "06_rag_vs_finetune": fixed + RAG_CORPUS_PASSAGES / ENCODE_PASSAGES_PER_S[profile.device] * _scale(profile, "forward")
            + rag_seconds(profile, n_scored, n_prompts, plain_systems=0),
        },
        measured=profile.device == "cpu",
    )
