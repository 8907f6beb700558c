"""Asking a chat model questions and scoring its answers: batched greedy generation with left padding,
the teacher-forced NLL of reference answers, ROUGE-L, stop and looping rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import WorkshopError, answer_cache
from .chat import SYSTEM_PROMPT, render_prompts, stop_token_ids, to_messages
from .fastgen import decode

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


def generate_answers(model, tokenizer, instructions: Sequence[str], *, max_new_tokens: int, batch_size: int = 32,
                     system_prompt: str | None = SYSTEM_PROMPT, desc: str = "generating",
                     repetition_penalty: float = 1.0) -> list[Answer]:
    """Greedy answers to each instruction, batched with LEFT padding (decoder-only models continue the
    sequence at its right end, so the padding must sit on the left).

    ``repetition_penalty`` > 1 divides the (positive) logits of tokens the answer already contains, as in
    CTRL (Keskar et al., 2019); only the generated tokens count, not the prompt, so the answer may still
    name what the question asks about.

    ``model.generate`` prepares each batch and :func:`workshop_utils.fastgen.decode` decodes it: the same greedy
    tokens as generate's own loop, with rows that stopped leaving the batch.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    stops = stop_token_ids(tokenizer, model)
    texts = render_prompts(tokenizer, instructions, system_prompt)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    answers: list[Answer] = []
    device = next(model.parameters()).device
    try:
        key, kept = answer_cache.lookup("answers", model, {
            "prompts": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], "batch_size": batch_size,
            "max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty, "stops": sorted(stops)}, desc)
        if kept is not None:
            return [Answer(**a) for a in kept]
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch"):
            enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            prompt_length = enc["input_ids"].shape[1]  # the same for every row: they are padded on the left
            penalty = ([RepetitionPenaltyLogitsProcessor(repetition_penalty, prompt_ignore_length=prompt_length)]
                       if repetition_penalty != 1.0 else [])
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                     logits_processor=LogitsProcessorList(penalty), custom_generate=decode)
            for row in out[:, prompt_length:].tolist():
                end = next((i for i, t in enumerate(row) if t in stops), None)
                kept = row if end is None else row[:end]
                kept = [t for t in kept if t != tokenizer.pad_token_id]
                answers.append(Answer(tokenizer.decode(kept, skip_special_tokens=True).strip(), end is not None, len(kept),
                                      tokenizer.decode(kept, skip_special_tokens=False)))
        answer_cache.store("answers", key, [vars(a) for a in answers])
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


def decoding_name(repetition_penalty: float = 1.0) -> str:
    """How answers were decoded, in words, for every table's caption."""
    if repetition_penalty == 1.0:
        return "plain greedy"
    return f"greedy, repetition penalty {repetition_penalty:g} on the answer's own tokens"


def score_chat_model(model, tokenizer, questions: Sequence[str], references: Sequence[str], *, max_new_tokens: int,
                     repetition_penalty: float = 1.0, answered: int | None = None, answers: Sequence[Answer] | None = None,
                     nll: bool = True, system_prompt: str | None = SYSTEM_PROMPT, batch_size: int = 32,
                     desc: str = "scoring", per_question: bool = False, similarity_encoder=None) -> dict:
    """The workshop's one way to score a chat model on held-out questions; every notebook and command calls it.

    * ``nll``: the mean NLL of the reference answers over *all* ``questions`` (teacher-forced, :func:`answer_nll`);
    * the model answers the first ``answered`` questions (all when None) with ``repetition_penalty``
      (1.0 = plain greedy), or ``answers`` it already wrote with that decoding are scored instead;
    * ROUGE-L, stop rate (``eos_rate``) and looping (``repetition``) of those answers, from :func:`score_answers`;
    * ``decoding`` names the decoding (write it in the table's caption), ``answered`` how many were answered,
      ``references_looping`` the looping rule applied to those questions' reference answers (the level
      human answers reach: a model's rate means something only beside it), ``answers`` the answers themselves;
    * with ``per_question``, ``nll_per_question``: each reference answer's mean NLL per token (for the spread);
    * with a sentence-transformers ``similarity_encoder``, ``similarity``: SemScore of the answers
      (:func:`workshop_utils.metrics.semantic_similarity`).
    """
    n = len(questions) if answered is None else min(answered, len(questions))
    if answers is None:
        answers = generate_answers(model, tokenizer, questions[:n], max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   system_prompt=system_prompt, desc=f"{desc}: answers",
                                   repetition_penalty=repetition_penalty)
    elif len(answers) != n:
        raise ValueError(f"{len(answers)} answers given for {n} questions")
    value, extra = None, {}
    if nll:
        scored = reference_logprobs(model, tokenizer, questions, references, system_prompt=system_prompt, desc=f"{desc}: NLL")
        value = -sum(s for s, _ in scored) / max(1, sum(k for _, k in scored))
        if per_question:
            extra["nll_per_question"] = [-s / max(1, k) for s, k in scored]
    from .metrics import repetition_rate, semantic_similarity

    if similarity_encoder is not None:
        extra["similarity"] = semantic_similarity([a.text for a in answers], references[:n], similarity_encoder)
    return {**score_answers(answers, references[:n], nll=value), **extra, "decoding": decoding_name(repetition_penalty),
            "answered": n, "references_looping": repetition_rate(references[:n]), "answers": list(answers)}


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
        key, kept = answer_cache.lookup("logprobs", model, {
            "pairs": [[list(p), list(a)] for p, a in token_pairs], "batch_size": batch_size}, desc)
        if kept is not None:
            return [(float(s), int(n)) for s, n in kept]
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
        answer_cache.store("logprobs", key, out)
    finally:
        model.train(was_training)
    return out


def reference_logprobs(model, tokenizer, instructions: Sequence[str], references: Sequence[str], *, batch_size: int = 8,
                       system_prompt: str | None = SYSTEM_PROMPT, desc: str = "NLL") -> list[tuple[float, int]]:
    """:func:`answer_logprobs` of each reference answer after its instruction, as the chat template writes them."""
    pairs = [answer_token_ids(tokenizer, q, a, system_prompt) for q, a in zip(instructions, references)]
    return answer_logprobs(model, tokenizer, pairs, batch_size=batch_size, desc=desc)


def answer_nll_per_question(model, tokenizer, instructions: Sequence[str], references: Sequence[str], *,
                            batch_size: int = 8, system_prompt: str | None = SYSTEM_PROMPT, desc: str = "NLL") -> list[float]:
    """Each reference answer's mean NLL per token (EOS included) given its instruction: what
    ``score_chat_model(..., per_question=True)`` returns as ``nll_per_question``."""
    scored = reference_logprobs(model, tokenizer, instructions, references, batch_size=batch_size,
                                system_prompt=system_prompt, desc=desc)
    return [-s / max(1, n) for s, n in scored]


def answer_nll(model, tokenizer, instructions: Sequence[str], references: Sequence[str], *, batch_size: int = 8,
               system_prompt: str | None = SYSTEM_PROMPT, desc: str = "NLL") -> float:
    """Mean negative log-likelihood per answer token of the reference answers, EOS included.

    Teacher-forced: the model reads the prompt and the reference answer and we average
    ``-log p(token | everything before it)`` over the answer's tokens. No generation, so it is cheap and
    steady; lower is better, and ``exp(nll)`` is the perplexity of the answers.
    """
    scored = reference_logprobs(model, tokenizer, instructions, references, batch_size=batch_size,
                                system_prompt=system_prompt, desc=desc)
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
