"""Supervised fine-tuning (SFT) of a chat model: the helpers of notebook 03 and the `workshop sft` command.

Three paths, chosen by the machine (see :func:`choose_path`):

* ``unsloth``: CUDA GPU and Unsloth importable. Unsloth's ``FastLanguageModel`` loads the model in 4-bit
  and adds LoRA adapters with its own fused kernels and gradient checkpointing (QLoRA, fastest).
* ``bnb``: CUDA GPU without Unsloth (or ``--no-unsloth``). transformers + bitsandbytes 4-bit NF4 +
  peft ``prepare_model_for_kbit_training`` + ``LoraConfig`` (QLoRA, the reference implementation;
  runs under ``accelerate launch --multi_gpu --num_processes N`` for data parallelism, one 4-bit copy
  per GPU).
* ``lora``: no GPU. Plain peft LoRA on the float32 model. bitsandbytes' NF4 4-bit also runs on a CPU
  (``--load-in-4bit`` takes the ``bnb`` path there): it cuts the weights' memory to under a third but is
  no faster per step on a 2-core CPU, so the CPU profiles train in float32 (notebook 03 measures both).
  Data parallel on CPU processes works too:
  ``accelerate launch --multi_gpu --num_processes 2 -m workshop_utils.cli sft --no-unsloth ...`` (torchrun
  starts the processes; without CUDA they form a gloo group. ``--cpu`` alone would need mpirun).

Only the main process generates, scores and writes (metrics.json, adapter, tokenizer).

The data are rendered as *conversational prompt/completion* pairs (``prompt`` = optional system
message + user message, ``completion`` = the assistant message). TRL then computes the loss on the
completion only and the chat template closes every assistant turn with its end-of-turn token, with any
chat template: it needs no ``{% generation %}`` markers.

Keep this module's top level light: torch, transformers, trl and unsloth are imported inside functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import DataError, WorkshopError
from .paths import write_json_atomic

SEED = 42
SYSTEM_PROMPT = "You are a medical assistant. Answer health questions accurately in a few plain sentences."
# Every linear layer of a Llama block: attention (q, k, v, o) and MLP (gate, up, down).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Existing tokens that can serve as padding when a tokenizer's pad token is missing or equals EOS:
# Llama 3 reserves tokens for this; SmolLM2/Qwen-style vocabularies have <|endoftext|> or <unk>.
PAD_CANDIDATES = (
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_250|>",
    "<|reserved_special_token_0|>",
    "<|pad|>",
    "<pad>",
    "<|endoftext|>",
    "<unk>",
)
NEW_PAD = "<|pad|>"
INTERRUPT_ENV = "WORKSHOP_SFT_INTERRUPT_AT_STEP"  # tests: stop after saving this step, as a crash would


# --------------------------------------------------------------------------- choosing the path
@dataclass(frozen=True)
class SFTPath:
    """Which implementation trains, on which model, and why."""

    name: str  # "unsloth", "bnb" or "lora"
    model: str
    reason: str

    def describe(self) -> str:
        what = {
            "unsloth": "QLoRA through Unsloth (4-bit, Unsloth kernels)",
            "bnb": "QLoRA through transformers + bitsandbytes + peft (4-bit NF4)",
            "lora": "LoRA through peft on the full-precision model",
        }[self.name]
        return f"path '{self.name}': {what}, because {self.reason}"


def unsloth_available() -> bool:
    """Whether the unsloth package is installed (it is imported only when the path uses it)."""
    return importlib.util.find_spec("unsloth") is not None


def choose_path(profile, *, use_unsloth: bool = True, model: str | None = None, load_in_4bit: bool | None = None) -> SFTPath:
    """The SFT path for this profile. On a GPU with Unsloth this imports unsloth (it must come early).

    ``load_in_4bit`` overrides the profile's choice; on a CPU it selects the bitsandbytes NF4 path.
    """
    if load_in_4bit is not None:
        profile = dataclasses.replace(profile, load_in_4bit=load_in_4bit)
    if profile.device == "cuda":
        if not profile.load_in_4bit:
            return SFTPath("lora", model or profile.llm_model_bnb, "the profile does not load the model in 4-bit")
        if not use_unsloth:
            return SFTPath("bnb", model or profile.llm_model_bnb, "Unsloth was switched off (--no-unsloth)")
        if not unsloth_available():
            return SFTPath("bnb", model or profile.llm_model_bnb, "a CUDA GPU is here but Unsloth is not installed")
        try:
            import unsloth  # noqa: F401  (patches transformers: import it before them, and only here)
        except Exception as exc:  # a broken install must not stop the workshop: fall back to the reference path
            return SFTPath("bnb", model or profile.llm_model_bnb, f"Unsloth is installed but failed to import ({exc.__class__.__name__})")
        return SFTPath("unsloth", model or profile.llm_model, "a CUDA GPU is here and Unsloth imports")
    if profile.load_in_4bit:
        return SFTPath("bnb", model or profile.llm_model, "4-bit was asked for on a CPU: bitsandbytes runs NF4 on CPUs too")
    why = ("there is no CUDA GPU, and on a CPU 4-bit NF4 saves memory but not time (notebook 03 measures both), "
           "so the weights stay float32")
    return SFTPath("lora", model or profile.llm_model, why)


# --------------------------------------------------------------------------- TRL's loss on CPU
class TorchTokenLogProbs:
    """TRL's per-token log-probabilities in plain PyTorch, for machines without a GPU.

    TRL 1.15's ``SFTTrainer`` computes the loss with a fused LM head whose inner loop is a Triton kernel;
    Triton runs on GPUs only, so on a CPU training stops with "0 active drivers". This class has the same
    ``apply`` signature and outputs; it builds the full logits (fine for the small CPU models) and lets
    autograd do the backward pass.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        import torch

        z = hidden.float() @ weight.float().t()
        if bias is not None:
            z = z + bias.float()
        z = z * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        logp = torch.log_softmax(z, dim=-1)
        token = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        with torch.no_grad():  # the metrics TRL logs: no autograd graph (it would hold another logits-sized tensor)
            entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
            sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
            mean = z.mean(-1) if "mean_logits" in outputs else None
            top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
        return token, entropy, sq, mean, top1


def use_torch_loss_on_cpu() -> bool:
    """Without CUDA, make TRL's SFTTrainer compute its loss in PyTorch (see TorchTokenLogProbs).

    Returns True when the switch was made. On a GPU nothing changes: TRL's Triton kernel is faster and
    never builds the full (tokens x vocabulary) logits.
    """
    import torch

    if torch.cuda.is_available():
        return False
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "_ChunkedLogProbFunction"):  # a TRL without the fused head needs nothing
        return False
    trl_utils._ChunkedLogProbFunction = TorchTokenLogProbs
    return True


# --------------------------------------------------------------------------- tokens
def ensure_distinct_pad(tokenizer, model=None) -> str:
    """Give the tokenizer a pad token distinct from EOS (and tell the model). Returns what was done.

    Many chat models ship with ``pad_token == eos_token`` or no pad token. Padding with EOS is harmless
    for the loss (padding is masked) but it is fragile: collators that mask "every pad id" then also
    mask the real EOS that ends each answer, and the model never learns to stop.
    """
    eos_id = tokenizer.eos_token_id
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != eos_id:
        action = f"kept pad token {tokenizer.pad_token!r} (distinct from EOS {tokenizer.eos_token!r})"
    else:
        before = tokenizer.pad_token
        vocab = tokenizer.get_vocab()
        taken = {eos_id, tokenizer.bos_token_id}
        if model is not None and getattr(model, "generation_config", None) is not None:
            stops = model.generation_config.eos_token_id
            taken |= set(stops if isinstance(stops, (list, tuple)) else [stops])
        choice = next((c for c in (*PAD_CANDIDATES, tokenizer.unk_token) if c and c in vocab and vocab[c] not in taken), None)
        if choice is not None:
            tokenizer.pad_token = choice
            action = f"pad token was {before!r}: now {choice!r}, an existing token distinct from EOS"
        else:
            tokenizer.add_special_tokens({"pad_token": NEW_PAD})
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
            action = f"pad token was {before!r}: added {NEW_PAD!r} and resized the embeddings"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return action


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end a generated answer: the tokenizer's EOS plus the model's generation EOS list."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None) if model is not None else None
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    if extra is not None:
        ids += list(extra) if isinstance(extra, (list, tuple)) else [extra]
    return sorted({i for i in ids if i is not None and i != tokenizer.pad_token_id})


# --------------------------------------------------------------------------- data
def to_messages(instruction: str, system_prompt: str | None = SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversation that asks ``instruction``: an optional system message, then the user."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": instruction}]


def to_prompt_completion(dataset, system_prompt: str | None = SYSTEM_PROMPT):
    """instruction/response rows -> TRL's conversational prompt/completion format."""

    def convert(row):
        return {
            "prompt": to_messages(row["instruction"], system_prompt),
            "completion": [{"role": "assistant", "content": row["response"]}],
        }

    return dataset.map(convert, remove_columns=dataset.column_names)


def render_prompts(tokenizer, instructions: Sequence[str], system_prompt: str | None = SYSTEM_PROMPT) -> list[str]:
    """Chat-template text of each prompt, ending with the assistant header (the model writes next)."""
    return [
        tokenizer.apply_chat_template(to_messages(q, system_prompt), tokenize=False, add_generation_prompt=True)
        for q in instructions
    ]


def sequence_lengths(tokenizer, conv_dataset) -> list[int]:
    """Token count of each prompt+completion conversation, as the trainer will tokenize it."""
    lengths = []
    for row in conv_dataset:
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return lengths


def truncation_report(tokenizer, conv_dataset, max_length: int) -> dict[str, Any]:
    """How many examples ``max_length`` cuts (TRL truncates silently; a cut answer loses its EOS)."""
    lengths = sequence_lengths(tokenizer, conv_dataset)
    cut = sum(1 for n in lengths if n > max_length)
    return {
        "examples": len(lengths),
        "truncated": cut,
        "share": cut / max(1, len(lengths)),
        "longest": max(lengths, default=0),
        "mean": sum(lengths) / max(1, len(lengths)),
        "max_length": max_length,
    }


def check_shared_prompts(dd) -> int:
    """Number of held-out prompts also in training (must be 0: the loader refuses overlaps)."""
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731
    train = {norm(q) for q in dd["train"]["instruction"]}
    return sum(1 for q in dd["test"]["instruction"] if norm(q) in train)


# --------------------------------------------------------------------------- checking the collated batch
def label_report(batch, tokenizer) -> dict[str, Any]:
    """Check a collated training batch: is the loss on the assistant's tokens only, ending with EOS?

    Per row: labels are -100 on padding and on the whole prompt; the labelled tokens form one span at
    the end of the sequence; that span contains the EOS token (the model is taught to stop). Returns the
    counts and a list of problems (empty when all is well).
    """
    input_ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
    attention = batch["attention_mask"].tolist() if "attention_mask" in batch else [[1] * len(r) for r in input_ids]
    problems: list[str] = []
    n_loss = n_real = 0
    header = _assistant_header_ids(tokenizer)
    for r, (ids, labs, att) in enumerate(zip(input_ids, labels, attention)):
        real = [i for i, a in enumerate(att) if a]
        n_real += len(real)
        on = [i for i, lab in enumerate(labs) if lab != -100]
        n_loss += len(on)
        if not on:
            problems.append(f"row {r}: no token carries loss")
            continue
        if any(not att[i] for i in on):
            problems.append(f"row {r}: a padding position carries loss")
        if on != list(range(on[0], on[-1] + 1)):
            problems.append(f"row {r}: the labelled tokens are not one span")
        if any(labs[i] != ids[i] for i in on):
            problems.append(f"row {r}: labels differ from input ids")
        if tokenizer.eos_token_id not in [ids[i] for i in on]:
            problems.append(f"row {r}: the answer does not contain EOS {tokenizer.eos_token!r}")
        if real and on[-1] != real[-1]:
            problems.append(f"row {r}: tokens after the answer are not masked")
        if header and ids[on[0] - len(header): on[0]] != header:
            problems.append(f"row {r}: the loss does not start right after the assistant header")
    return {"rows": len(input_ids), "loss_tokens": n_loss, "real_tokens": n_real,
            "loss_share": n_loss / max(1, n_real), "problems": problems}


def _assistant_header_ids(tokenizer) -> list[int]:
    """Tokens the template puts between the prompt and the answer (what generation starts after)."""
    probe = [{"role": "user", "content": "x"}]
    try:
        with_gen = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        without = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    except Exception:  # templates that demand a system message or alternate roles strictly
        return []
    if not with_gen.startswith(without):
        return []
    suffix = with_gen[len(without):]
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return ids[-2:] if len(ids) >= 2 else ids


def show_example(batch, tokenizer, row: int = 0) -> str:
    """The first collated example as two strings: what the model reads, and what it is graded on."""
    ids, labs = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
    att = batch["attention_mask"][row].tolist() if "attention_mask" in batch else [1] * len(ids)
    context = tokenizer.decode([i for i, lab, a in zip(ids, labs, att) if lab == -100 and a])
    graded = tokenizer.decode([lab for lab in labs if lab != -100])
    return f"context (no loss):\n{context}\n\ngraded (loss):\n{graded}"


# --------------------------------------------------------------------------- generating and scoring
@dataclass
class Answer:
    text: str
    stopped: bool  # ended with a stop token before max_new_tokens
    new_tokens: int
    raw: str = ""  # the same tokens with special tokens left in (what a random model mostly writes)

    def shown(self) -> str:
        """The answer for display: the text, or its special tokens when it has nothing else."""
        if self.text:
            return self.text
        if self.raw.strip():
            return f"(special tokens only) {self.raw}"
        return f"(whitespace only, {self.new_tokens} tokens)" if self.new_tokens else "(empty)"


def generate_answers(model, tokenizer, instructions: Sequence[str], *, max_new_tokens: int, batch_size: int = 16,
                     system_prompt: str | None = SYSTEM_PROMPT, desc: str = "generating") -> list[Answer]:
    """Greedy answers to each instruction, batched with LEFT padding (decoder-only models continue the
    sequence at its right end, so the padding must sit on the left)."""
    import torch
    from tqdm.auto import tqdm

    stops = stop_token_ids(tokenizer, model)
    texts = render_prompts(tokenizer, instructions, system_prompt)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    answers: list[Answer] = []
    device = next(model.parameters()).device
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch"):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                end = next((i for i, t in enumerate(row) if t in stops), None)
                kept = row if end is None else row[:end]
                kept = [t for t in kept if t != tokenizer.pad_token_id]
                answers.append(Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(), end is not None, len(kept),
                                      tokenizer.decode(kept, skip_special_tokens=False)))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def score_answers(answers: Sequence[Answer], references: Sequence[str], nll: float | None = None) -> dict[str, float]:
    """ROUGE-L against the references, the share of answers that stopped with EOS, the share that loop,
    and (when given) the reference answers' NLL from :func:`answer_nll`."""
    from .metrics import eos_rate, repetition_rate, rouge_l

    scores = {"rougeL": rouge_l([a.text for a in answers], list(references)),
              "eos_rate": eos_rate([a.stopped for a in answers]),
              "repetition": repetition_rate([a.text for a in answers])}
    return scores if nll is None else {"nll": nll, **scores}


def answer_token_ids(tokenizer, instruction: str, answer: str, system_prompt: str | None = SYSTEM_PROMPT) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one conversation as the chat template writes it; the answer ids end
    with the end-of-turn token (EOS), exactly what training puts the loss on."""
    return conversation_token_ids(tokenizer, to_messages(instruction, system_prompt), answer)


def conversation_token_ids(tokenizer, prompt: list[dict[str, str]], answer: str) -> tuple[list[int], list[int]]:
    """:func:`answer_token_ids` for a prompt given as chat messages (TRL's conversational format)."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(text):
        raise WorkshopError("the chat template writes the prompt differently with and without an answer; "
                            "answer_nll needs a template whose conversation starts with the generation prompt")
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(text):], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos in answer_ids:  # drop what the template writes after the end of turn (a newline)
        answer_ids = answer_ids[: answer_ids.index(eos) + 1]
    return prompt_ids, answer_ids


def answer_logprobs(model, tokenizer, token_pairs: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 8,
                    desc: str = "log-probabilities") -> list[tuple[float, int]]:
    """For each (prompt ids, answer ids): (sum of log p(answer token | everything before it), answer tokens).

    Teacher-forced and batched (rows sorted by length, so little padding); the model is not changed.
    """
    import torch
    from tqdm.auto import tqdm

    order = sorted(range(len(token_pairs)), key=lambda i: len(token_pairs[i][0]) + len(token_pairs[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = [(0.0, 0)] * len(token_pairs)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            chunk = order[start:start + batch_size]
            rows = [token_pairs[i] for i in chunk]
            width = max(len(p) + len(a) for p, a in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (p, a) in enumerate(rows):
                seq = p + a
                ids[r, :len(seq)] = torch.tensor(seq)
                labels[r, len(p):len(seq)] = torch.tensor(a)
                mask[r, :len(seq)] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            targets = labels[:, 1:].to(device)
            losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100,
                                                       reduction="none")
            sums, counts = (-losses.sum(dim=1)).tolist(), (targets != -100).sum(dim=1).tolist()
            for i, s, n in zip(chunk, sums, counts):
                out[i] = (float(s), int(n))
    finally:
        model.train(was_training)
    return out


def answer_nll(model, tokenizer, instructions: Sequence[str], references: Sequence[str], *, batch_size: int = 8,
               system_prompt: str | None = SYSTEM_PROMPT, desc: str = "NLL") -> float:
    """Mean negative log-likelihood per answer token of the reference answers, EOS included.

    Teacher-forced: the model reads the prompt and the reference answer and we average
    ``-log p(token | everything before it)`` over the answer's tokens. No generation, so it is cheap and
    steady; lower is better, and ``exp(nll)`` is the perplexity of the answers.
    """
    pairs = [answer_token_ids(tokenizer, q, a, system_prompt) for q, a in zip(instructions, references)]
    scored = answer_logprobs(model, tokenizer, pairs, batch_size=batch_size, desc=desc)
    return -sum(s for s, _ in scored) / max(1, sum(n for _, n in scored))


def side_by_side(instructions, references, before, after, n: int = 3, width: int = 110) -> str:
    """A few held-out prompts with the reference, the base model's and the fine-tuned model's answer."""
    def cut(s: str) -> str:
        s = " ".join(s.split())
        return s if len(s) <= width else s[: width - 3] + "..."

    blocks = []
    for q, ref, b, a in list(zip(instructions, references, before, after))[:n]:
        blocks.append("\n".join([f"Q:         {cut(q)}", f"reference: {cut(ref)}",
                                 f"before:    {cut(b.shown())}{'' if b.stopped else '  [no EOS]'}",
                                 f"after:     {cut(a.shown())}{'' if a.stopped else '  [no EOS]'}"]))
    return "\n\n".join(blocks)


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters; peft counts 4-bit packed weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def saved_weight_files(folder: Path | str) -> list[str]:
    """Weight files in a saved folder; the workshop saves safetensors only."""
    return sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))


# --------------------------------------------------------------------------- the `workshop sft` command
def add_arguments(parser) -> None:
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: the profile's LLM for the chosen path)")
    parser.add_argument("--data", help="folder with train/test files, one jsonl/csv/tsv file (split here), or a hub id "
                                       "(default: the profile's instruction set)")
    parser.add_argument("--output-dir", required=True, help="where the adapter, tokenizer and metrics.json go")
    parser.add_argument("--instruction-field", help="field holding the instruction (default: the profile's)")
    parser.add_argument("--response-field", help="field holding the response (default: the profile's)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the profile's)")
    parser.add_argument("--max-length", type=int, help="tokens per training example; longer ones are cut (default: the profile's)")
    parser.add_argument("--lora-r", type=int, help="LoRA rank (default: the profile's; alpha scales with it)")
    parser.add_argument("--learning-rate", type=float, help="default: the profile's")
    parser.add_argument("--batch-size", type=int, help="per-device batch size (default: the profile's)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget when scoring (default: the profile's)")
    parser.add_argument("--eval-rows", type=int, help="held-out questions whose reference answers' NLL is measured (default: the profile's)")
    parser.add_argument("--generate-rows", type=int, help="of those, how many the model answers for ROUGE-L and the stop rate (default: the profile's)")
    parser.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction, default=None,
                        help="load the base model in 4-bit NF4 through bitsandbytes (default: the profile's; works on a CPU too)")
    parser.add_argument("--train-rows", type=int, help="training rows to use (default: the profile's)")
    parser.add_argument("--system-prompt", default=SYSTEM_PROMPT, help="system message ('' for none)")
    parser.add_argument("--no-unsloth", action="store_true", help="on a GPU, use transformers + bitsandbytes + peft instead of Unsloth")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    parser.add_argument("--seed", type=int, default=SEED)


def _is_path_like(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in (".jsonl", ".json", ".csv", ".tsv")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise WorkshopError(f"--{name} must be a positive number, got {value}")


def clear_previous_run(out: Path) -> None:
    """--overwrite: remove what an earlier run of this command wrote (checkpoints, metrics) and nothing else."""
    from .paths import trainer_checkpoints

    for stale in [*trainer_checkpoints(out), out / "metrics.json", out / "before.json"]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


def run(args) -> int:
    """`workshop sft`: load, score the base model, fine-tune, score again, save adapter + metrics.json."""
    from .paths import display_path, refuse_checkpoint_lookalikes
    from .profiles import active_profile

    profile = active_profile()
    for name in ("max_steps", "max_length", "lora_r", "batch_size", "max_new_tokens", "eval_rows", "generate_rows", "train_rows"):
        _positive(name.replace("_", "-"), getattr(args, name))
    out = Path(args.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise WorkshopError(f"{out}: --output-dir is a file; give a folder")
    if (out / "metrics.json").is_file():
        if not args.overwrite:
            raise WorkshopError(f"{display_path(out)} already holds a finished run (metrics.json); "
                                "pass --overwrite to replace it or choose another --output-dir")
    refuse_checkpoint_lookalikes(out)

    fields = (args.instruction_field or profile.llm_fields[0], args.response_field or profile.llm_fields[1])
    source = args.data or profile.llm_data
    if _is_path_like(source) and not Path(source).expanduser().exists():
        raise DataError(f"{source}: file not found; check the --data path")
    from .data import load_instruction_task

    # Validate the data before anything slow is loaded: bad input fails in a second, with one line.
    dd = load_instruction_task(
        source=str(Path(source).expanduser()) if _is_path_like(source) else source, fields=fields, seed=args.seed,
        max_rows={"train": args.train_rows or profile.llm_train_rows, "test": args.eval_rows or profile.llm_eval_rows},
    )
    if len(dd["train"]) == 0 or len(dd["test"]) == 0:
        raise DataError(f"{source}: needs rows in both training and held-out splits (got {len(dd['train'])} / {len(dd['test'])})")

    from accelerate import PartialState

    state = PartialState(cpu=profile.device == "cpu")
    if args.overwrite and state.is_main_process:
        clear_previous_run(out)
    state.wait_for_everyone()
    out.mkdir(parents=True, exist_ok=True)
    path = choose_path(profile, use_unsloth=not args.no_unsloth, model=resolve_model(args.model), load_in_4bit=args.load_in_4bit)
    if state.is_main_process:
        print(path.describe())
    result = train_and_score(profile, path, dd, out, args, state)
    if state.is_main_process:
        b, a = result["before"], result["after"]
        print(f"held-out NLL {b['nll']:.3f} -> {a['nll']:.3f}; ROUGE-L {b['rougeL']:.3f} -> {a['rougeL']:.3f}; "
              f"stop rate {b['eos_rate']:.0%} -> {a['eos_rate']:.0%}; looping {b['repetition']:.0%} -> {a['repetition']:.0%}; "
              f"{result['train_seconds']:.0f} s, {result['tokens_per_second']:,.0f} tokens/s; "
              f"adapter and metrics.json in {display_path(out)}")
    return 0


def load_for_path(path: SFTPath, profile, *, max_length: int, lora_r: int, seed: int):
    """(peft model, tokenizer) for the chosen path, LoRA attached. The notebook writes the same steps out."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora_alpha = profile.lora_alpha * lora_r // profile.lora_r
    try:
        if path.name == "unsloth":
            from unsloth import FastLanguageModel

            model, tokenizer = FastLanguageModel.from_pretrained(path.model, max_seq_length=max_length, load_in_4bit=True, dtype=None)
            ensure_distinct_pad(tokenizer, model)
            model = FastLanguageModel.get_peft_model(
                model, r=lora_r, lora_alpha=lora_alpha, lora_dropout=profile.lora_dropout,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                use_gradient_checkpointing="unsloth", random_state=seed,
            )
            return model, tokenizer
        tokenizer = AutoTokenizer.from_pretrained(path.model)
        if path.name == "bnb":
            from peft import prepare_model_for_kbit_training
            from transformers import BitsAndBytesConfig

            from .envinfo import cpu_bf16_native

            # bf16 compute on GPUs from Ampere on and on CPUs that have it in hardware; fp16 on older GPUs (a T4);
            # float32 on CPUs that would only emulate bf16 (many times slower)
            native_bf16 = profile.device == "cuda" or cpu_bf16_native()
            compute = torch.float16 if profile.fp16 else torch.bfloat16 if native_bf16 else torch.float32
            bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                     bnb_4bit_compute_dtype=compute)
            device_map = {"": PartialStateIndex() if profile.device == "cuda" else "cpu"}
            model = AutoModelForCausalLM.from_pretrained(path.model, quantization_config=bnb, dtype=compute, device_map=device_map)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.device == "cuda")
        else:
            model = AutoModelForCausalLM.from_pretrained(path.model, dtype=torch.float32 if profile.device == "cpu" else "auto")
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise WorkshopError(f"{path.model}: could not load the model ({first[:200]}); check --model (a hub id, a local folder or a .gguf file)") from None
    tokenizer.padding_side = "right"  # training pads on the right; generate_answers switches to left
    ensure_distinct_pad(tokenizer, model)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=profile.lora_dropout, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    return get_peft_model(model, config), tokenizer


def PartialStateIndex() -> int:  # noqa: N802 - reads like the value it returns
    """The local GPU of this process (each data-parallel process holds a whole 4-bit copy)."""
    from accelerate import PartialState

    return PartialState().local_process_index


def small_model_threads(model) -> int:
    """Use one CPU thread for a model too small to share out (returns the thread count now in use).

    With a hidden size of a few hundred or less, each matrix product is too little work to split: the
    threads spend their time waiting for each other, and on a busy machine two threads can be ten times
    slower than one. Only the unit tests' tiny model is that small; real models keep torch's default.
    """
    import torch

    if getattr(getattr(model, "config", None), "hidden_size", 10**6) <= 256:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def resolve_model(model: str | None) -> str | None:
    """A ``.gguf`` file becomes its converted safetensors folder (once, cached); anything else is kept."""
    if model and model.lower().endswith(".gguf"):
        from .assets import convert_gguf, smollm2_gguf, smollm2_path

        try:
            if Path(model).expanduser().resolve() == smollm2_gguf().resolve():
                return str(smollm2_path())  # the packaged model: the profiles' converted copy
        except WorkshopError:
            pass
        return str(convert_gguf(model))
    return model


def train_and_score(profile, path: SFTPath, dd, out: Path, args, state) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from .metrics import peak_memory_bytes, reset_peak_memory
    from .paths import last_checkpoint, trainer_checkpoints

    use_torch_loss_on_cpu()
    set_seed(args.seed)
    max_length = args.max_length or profile.sft_max_length
    lora_r = args.lora_r or profile.lora_r
    max_new = args.max_new_tokens or profile.max_new_tokens
    system_prompt = args.system_prompt or None
    model, tokenizer = load_for_path(path, profile, max_length=max_length, lora_r=lora_r, seed=args.seed)
    if profile.device == "cpu":
        small_model_threads(model)
    questions, references = list(dd["test"]["instruction"]), list(dd["test"]["response"])
    n_generate = min(len(questions), args.generate_rows or profile.llm_generate_rows or len(questions))

    def scores(scored, which: str) -> dict[str, float]:
        nll = answer_nll(scored, tokenizer, questions, references, system_prompt=system_prompt, desc=f"{which}: NLL")
        answers = generate_answers(scored, tokenizer, questions[:n_generate], max_new_tokens=max_new,
                                   system_prompt=system_prompt, desc=which)
        return score_answers(answers, references[:n_generate], nll=nll)

    before_file = out / "before.json"
    resuming = before_file.is_file()  # the base model was scored by the interrupted run
    # every process looks before the main one writes: a process that looked later would skip the barrier
    # below, and the processes' barriers would pair up wrongly until two of them wait forever
    state.wait_for_everyone()
    if not resuming:
        if state.is_main_process:  # LoRA B starts at zero, so the fresh peft model answers like the base model
            write_json_atomic(before_file, scores(model, "base model"))
        state.wait_for_everyone()
    before = json.loads(before_file.read_text(encoding="utf-8"))

    train = to_prompt_completion(dd["train"], system_prompt)
    trunc = truncation_report(tokenizer, train, max_length)
    if state.is_main_process:
        print(f"max_length {max_length}: {trunc['truncated']} of {trunc['examples']} training examples "
              f"({trunc['share']:.1%}) are cut; the longest has {trunc['longest']} tokens")
    steps = args.max_steps or profile.sft_max_steps
    on_gpu = profile.device == "cuda"
    config = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size or profile.sft_batch_size,
        gradient_accumulation_steps=profile.sft_grad_accum,
        learning_rate=args.learning_rate or profile.sft_learning_rate,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), weight_decay=0.0,
        max_length=max_length, completion_only_loss=True,
        bf16=profile.bf16, fp16=profile.fp16, use_cpu=not on_gpu,
        gradient_checkpointing=path.name == "bnb" and on_gpu,
        gradient_checkpointing_kwargs={"use_reentrant": False} if path.name == "bnb" and on_gpu else None,
        optim="adamw_8bit" if path.name == "unsloth" else ("paged_adamw_8bit" if path.name == "bnb" and on_gpu else "adamw_torch"),
        logging_steps=max(1, steps // 10), save_strategy="steps", save_steps=max(1, steps // 3), save_total_limit=2,
        include_num_input_tokens_seen="non_padding", report_to="none", seed=args.seed, data_seed=args.seed,
        ddp_find_unused_parameters=False, dataloader_num_workers=0, disable_tqdm=not state.is_main_process,
    )
    callbacks = []
    stop_at = int(os.environ.get(INTERRUPT_ENV, "0") or 0)
    if stop_at:
        class _Interrupt(TrainerCallback):  # tests only: behave like a crash right after a checkpoint
            def on_save(self, a, s, c, **kw):
                if s.global_step >= stop_at:
                    raise KeyboardInterrupt

        callbacks.append(_Interrupt())
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer, callbacks=callbacks)
    resume = last_checkpoint(out)
    tokens_before = 0
    if resume is not None:
        tokens_before = json.loads((resume / "trainer_state.json").read_text(encoding="utf-8")).get("num_input_tokens_seen", 0)
        if state.is_main_process:
            print(f"resuming from {resume.name}")
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen - tokens_before
    peak = peak_memory_bytes(profile.device)
    trainable, total = parameter_counts(trainer.model)

    result: dict[str, Any] = {}
    if state.is_main_process:
        after = scores(trainer.model, "fine-tuned")
        trainer.model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        result = {
            "before": before, "after": after,
            "model": path.model if not Path(path.model).exists() else Path(path.model).name,
            "model_parameters": total, "load_in_4bit": path.name in ("unsloth", "bnb"),
            "train_seconds": round(seconds, 2), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "train_tokens": int(tokens), "peak_memory_bytes": int(peak), "trainable_params": trainable,
            "route": path.name, "steps": int(trainer.state.global_step), "resumed_from": resume.name if resume else None,
            "processes": state.num_processes, "max_length": max_length, "truncated_share": trunc["share"],
            "lora_r": lora_r, "train_rows": len(dd["train"]), "eval_rows": len(questions),
            "generated_answers": n_generate, "max_new_tokens": max_new, "seed": args.seed,
        }
        write_json_atomic(out / "metrics.json", result)  # written last: its presence means "finished"
        for checkpoint in trainer_checkpoints(out):  # only needed to resume; they hold pickled state
            shutil.rmtree(checkpoint, ignore_errors=True)
    state.wait_for_everyone()
    if not result:
        result = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result
