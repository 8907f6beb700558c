"""Preference tuning with DPO: the plumbing of notebook 05 (the `workshop dpo` command is in ``commands/dpo.py``).

The lesson itself (how a preference pair is built, how the SFT model is loaded as policy and reference,
the ``DPOConfig``, the implicit reward and its accuracy) is written in notebook 05's cells tagged
``export``; ``python -m workshop_utils.tooling.nbbuild`` copies those cells into
:mod:`workshop_utils.recipes.preference_dpo`, and both the notebook and this command run that code.
What stays here is what is not the lesson: reading and checking a pairs file, log-probabilities of
many pairs at once.

A pairs file is JSON lines, one pair per line, in TRL's conversational preference format plus a split::

    {"prompt": [{"role": "system", ...}, {"role": "user", "content": "What is ...?"}],
     "chosen": [{"role": "assistant", "content": "the reference answer"}],
     "rejected": [{"role": "assistant", "content": "the SFT model's own answer"}],
     "split": "train"}          # or "test": the held-out pairs, from topics training never saw
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from . import DataError
from .paths import write_atomic

SPLITS = ("train", "test")
PAIR_KEYS = ("prompt", "chosen", "rejected")


# --------------------------------------------------------------------------- pairs files
def write_pairs(path: Path | str, pairs: Sequence[dict[str, Any]]) -> Path:
    """Write pairs as JSON lines, one pair a line, with :func:`paths.write_atomic` (never half a file)."""
    return write_atomic(path, "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))


def _messages_ok(value: Any, roles: tuple[str, ...]) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(
        isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) for m in value))


def load_pairs(path: Path | str) -> dict[str, list[dict[str, Any]]]:
    """Pairs by split, checked: every line a pair in TRL's conversational format, both splits present,
    and no held-out prompt or chosen answer also in training. Errors are one line naming the line."""
    path = Path(path).expanduser()
    fix = "rebuild it with notebook 05 or `workshop dpo` without --data"
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found; check the --data path or {fix}")
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); {fix}") from None
            if not isinstance(pair, dict):
                raise DataError(f"{where}: expected a JSON object with {', '.join(PAIR_KEYS)}; {fix}")
            missing = [k for k in (*PAIR_KEYS, "split") if k not in pair]
            if missing:
                raise DataError(f"{where}: missing {', '.join(missing)}; each pair needs prompt, chosen, rejected and split")
            if not _messages_ok(pair["prompt"], ("system", "user", "assistant")):
                raise DataError(f"{where}: 'prompt' must be a list of chat messages with role and content")
            for key in ("chosen", "rejected"):
                if not _messages_ok(pair[key], ("assistant",)) or not pair[key][-1]["content"].strip():
                    raise DataError(f"{where}: '{key}' must be a non-empty assistant message, e.g. "
                                    '[{"role": "assistant", "content": "..."}]')
            if pair["split"] not in SPLITS:
                raise DataError(f"{where}: split must be 'train' or 'test', got {pair['split']!r}")
            by_split[pair["split"]].append(pair)
    for split in SPLITS:
        if not by_split[split]:
            raise DataError(f"{path}: no pairs with split '{split}'; DPO needs training pairs and held-out pairs")
    for what, key in (("prompt", lambda p: json.dumps(p["prompt"], sort_keys=True)),
                      ("chosen answer", lambda p: p["chosen"][-1]["content"].strip())):
        shared = {key(p) for p in by_split["train"]} & {key(p) for p in by_split["test"]}
        if shared:
            raise DataError(f"{path}: {len(shared)} held-out pairs share their {what} with a training pair; "
                            "held-out pairs must come from topics training never saw")
    return by_split


# --------------------------------------------------------------------------- scoring many pairs
def pair_logprobs(model, tokenizer, pairs: Sequence[dict[str, Any]], *, batch_size: int = 8,
                  desc: str = "log-probabilities") -> dict[str, list[tuple[float, int]]]:
    """Per pair, (sum of log-probabilities, tokens) of the chosen and of the rejected answer, EOS included."""
    from .answers import answer_logprobs, conversation_token_ids

    out = {}
    for key in ("chosen", "rejected"):
        ids = [conversation_token_ids(tokenizer, p["prompt"], p[key][-1]["content"]) for p in pairs]
        out[key] = answer_logprobs(model, tokenizer, ids, batch_size=batch_size, desc=f"{desc} ({key})")
    return out


def margin_curve(log_history: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """steps, reward margins and reward accuracies that DPOTrainer logged during training."""
    rows = [r for r in log_history if "rewards/margins" in r]
    return {"step": [r["step"] for r in rows], "margin": [r["rewards/margins"] for r in rows],
            "accuracy": [r.get("rewards/accuracies", float("nan")) for r in rows]}
