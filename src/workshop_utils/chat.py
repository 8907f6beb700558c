"""Chat data for supervised fine-tuning: the system prompt, special tokens, prompt/completion rows, and
checks of what a training batch grades.

The data are rendered as *conversational prompt/completion* pairs (``prompt`` = optional system message +
user message, ``completion`` = the assistant message). TRL then computes the loss on the completion only
and the chat template closes every assistant turn with its end-of-turn token, with any chat template: it
needs no ``{% generation %}`` markers.
"""

from __future__ import annotations

from typing import Any, Sequence

SYSTEM_PROMPT = "You are a medical assistant. Answer health questions accurately in a few plain sentences."


# --------------------------------------------------------------------------- tokens
def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end a generated answer: the tokenizer's EOS, always (also where the pad token is the same
    token, as SmolLM2 ships: dropping it there left nothing to stop on), plus the model's generation EOS list
    without the pad id."""
    config = getattr(model, "generation_config", None) if model is not None else None
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    extra = [] if extra is None else list(extra) if isinstance(extra, (list, tuple)) else [extra]
    ids = {i for i in extra if i is not None and i != tokenizer.pad_token_id}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


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
