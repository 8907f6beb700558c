"""A cache for the slow half of scoring: a model's greedy answers and its log-probabilities of given answers.

Notebooks 01, 03, 04, 05 and 06 ask the same model the same held-out questions several times: 03's "before" is
01's baseline, 04's "base" and "fine-tuned" are 03's "before" and "after". Greedy decoding and teacher-forced
log-probabilities are deterministic on a CPU, so the second computation can only repeat the first; this module
keeps the first and hands it back.

A result is stored under a key made of everything that decides it:

* **what the model computes**, not what it is called: the bytes of its logits on a fixed probe of 32 token ids
  (:func:`model_fingerprint`). A LoRA adapter switched off with ``disable_adapter()`` or one that is still
  all zeros (``lora_B`` starts at 0) computes the base model exactly and shares its results; one training
  step changes the logits and so the key;
* the **token ids** of every prompt (and answer), in order, and the batch size (batching with padding can move
  the last digit of a logit, so only the identical call is reused);
* the **decoding**: new-token limit, repetition penalty, stop ids. Not the pad id: padding is masked out, so
  which token pads a batch does not change a logit (``tests/unit/test_answer_cache.py`` checks it);
* the model's generation config, torch's and transformers' versions, and the source of the code that computes
  the results (this module, ``answers.py``, ``fastgen.py``).

It is off until :func:`use_cache` names a folder (the notebooks do, in ``outputs/<profile>/answer-cache/``);
every reuse prints one line naming its file, and deleting the folder makes everything compute again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

_FOLDER: Path | None = None
_MADE_OF: dict[str, dict[str, Any]] = {}
PROBE_TOKENS = 32


def use_cache(folder: Path | str | None) -> None:
    """Keep answers and log-probabilities in ``folder`` from now on (``None``: compute everything, keep nothing)."""
    global _FOLDER
    _FOLDER = None if folder is None else Path(folder)
    if _FOLDER is not None:
        _FOLDER.mkdir(parents=True, exist_ok=True)


def active() -> Path | None:
    return _FOLDER


def model_fingerprint(model) -> str:
    """A hash of the model's logits on a fixed probe (32 pseudo-random token ids, seed 0), in eval mode.

    Two models share it when they compute the same function on the probe, bit for bit: the same weights, or a
    peft model whose adapters are off or still zero. Any trained change to a layer moves the probe's logits."""
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or model.get_input_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, PROBE_TOKENS), generator=generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device)).logits
    finally:
        model.train(was_training)
    digest = hashlib.sha256(logits.detach().float().cpu().contiguous().numpy().tobytes())
    digest.update(f"{logits.dtype}|{device.type}".encode())
    return digest.hexdigest()[:24]


# generation-config entries the scoring calls set themselves (stop ids are in the key as ``stops``, the pad id
# changes nothing): SFTTrainer rewrites eos_token_id 2 as [2], and 03's pad fix changes pad_token_id
_PASSED_EXPLICITLY = ("transformers_version", "_from_model_config", "pad_token_id", "eos_token_id")


@functools.cache  # the code a process runs does not change under it: read and hash the files once
def _code_version() -> str:
    """A hash of the code that computes what is kept (this module, answers.py, fastgen.py): editing it starts afresh."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("answer_cache.py", "answers.py", "fastgen.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def _key(kind: str, model, payload: dict[str, Any]) -> str:
    import torch
    import transformers

    config = getattr(model, "generation_config", None)
    settings = ({k: v for k, v in config.to_dict().items() if v is not None and k not in _PASSED_EXPLICITLY}
                if config is not None else None)
    record = {"kind": kind, "model": model_fingerprint(model), "generation_config": settings, "code": _code_version(),
              "torch": torch.__version__, "transformers": transformers.__version__, **payload}
    key = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:32]
    # what the key was made of, kept beside the value (the token ids as a count): why two calls did or did not match
    _MADE_OF[key] = {**{k: v for k, v in record.items() if k not in ("prompts", "pairs")},
                     "rows": len(payload.get("prompts", payload.get("pairs", [])))}
    return key


def lookup(kind: str, model, payload: dict[str, Any], desc: str) -> tuple[str | None, Any]:
    """(key, stored value or None). Without a cache folder: (None, None), and no fingerprint is computed."""
    if _FOLDER is None:
        return None, None
    key = _key(kind, model, payload)
    path = _FOLDER / f"{kind}-{key}.json"
    if path.is_file():
        try:
            value = json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError):
            return key, None  # unreadable: computed again and rewritten
        from .paths import display_path

        print(f"{desc}: reused ({kind} of this same model, prompts and decoding, kept in {display_path(path)})")
        _MADE_OF.pop(key, None)  # nothing to store
        return key, value
    return key, None


def store(kind: str, key: str | None, value: Any) -> None:
    if key is None or _FOLDER is None:
        return
    from .paths import write_json_atomic

    write_json_atomic(_FOLDER / f"{kind}-{key}.json", {"key": _MADE_OF.pop(key, None), "value": value},
                      indent=None, default=str)
