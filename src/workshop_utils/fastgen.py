"""Greedy generation with fewer round trips per token than ``model.generate``, and the same tokens.

:func:`greedy_generate` is the decoding loop written out: one forward pass over the prompt (keeping only
the last position's logits, ``logits_to_keep=1``), then one forward pass per new token that reads the
key/value cache (``DynamicCache``) and gives the model only the newest token. It calls the model's forward
with the same inputs ``generate`` builds (the 2-D attention mask, the position ids counted from it, the
cache), so the logits are the same numbers and the greedy tokens the same tokens; what it leaves out is
``generate``'s per-token bookkeeping. Two things are added:

* rows that have stopped leave the batch (``drop_finished``): a batch of answers of unequal length no
  longer decodes every row until the longest one ends; the output is padded as ``generate`` pads it;
* a ``streamer`` receives each new token as it is chosen (``transformers.TextIteratorStreamer`` or any
  object with ``put`` and ``end``), the way ``generate(streamer=...)`` feeds it, for one prompt.

``scripts/benchmark_generation.py`` measures it against ``model.generate`` and against the memory
bandwidth bound; :func:`workshop_utils.answers.generate_answers` uses it.
"""

from __future__ import annotations

from typing import Sequence


def decode(model, input_ids, logits_processor, stopping_criteria, generation_config, drop_finished: bool = True,
           **model_kwargs):
    """The decoding loop for ``model.generate(..., custom_generate=fastgen.decode)``.

    ``generate`` does what it does once per call (the generation config, the attention mask, the logits
    processors, the cache) and hands over; this loop then decodes greedily with :func:`greedy_generate`,
    stopping on the config's end-of-turn ids or at ``max_new_tokens``. It refuses what it does not do
    (sampling, beams, stop strings, dict outputs) rather than doing something else.
    """
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria

    config = generation_config
    if config.do_sample or (config.num_beams or 1) > 1 or config.return_dict_in_generate:
        raise ValueError("fastgen.decode does greedy search only, returning token ids: do_sample=False, num_beams=1")
    unknown = [type(c).__name__ for c in stopping_criteria if not isinstance(c, (EosTokenCriteria, MaxLengthCriteria))]
    if unknown:
        raise ValueError(f"fastgen.decode stops on end-of-turn ids and max_new_tokens only, not {unknown}")
    stops = [] if config._eos_token_tensor is None else config._eos_token_tensor.flatten().tolist()
    pad = None if config._pad_token_tensor is None else int(config._pad_token_tensor)
    return greedy_generate(model, input_ids, model_kwargs.get("attention_mask"),
                           max_new_tokens=config.max_length - input_ids.shape[1], stop_ids=stops, pad_token_id=pad,
                           logits_processor=logits_processor or None, drop_finished=drop_finished,
                           cache=model_kwargs.get("past_key_values"))


def _first_positions(attention_mask):
    """Position ids of a left-padded batch, as ``generate`` counts them (padding at 0)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def greedy_generate(model, input_ids, attention_mask=None, *, max_new_tokens: int, stop_ids: Sequence[int],
                    pad_token_id: int | None, logits_processor=None, streamer=None, drop_finished: bool = True,
                    cache=None):
    """What ``model.generate(input_ids, attention_mask=..., max_new_tokens=..., do_sample=False,
    eos_token_id=stop_ids, pad_token_id=pad_token_id, logits_processor=logits_processor, streamer=streamer)``
    returns: the prompt followed by the greedy tokens, rows that stopped early padded with ``pad_token_id``.

    ``logits_processor`` is called as ``generate`` calls it, on (the sequences so far, next-token logits in
    float32), e.g. a ``RepetitionPenaltyLogitsProcessor``. ``cache``: an empty cache to fill (default: a
    new ``DynamicCache``).
    """
    import torch
    from transformers import DynamicCache

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = input_ids.device
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    pad = pad_token_id if pad_token_id is not None else int(stops[0]) if len(stops) else 0
    rows = input_ids.shape[0]
    new = torch.full((rows, max(1, max_new_tokens)), pad, dtype=torch.long, device=device)
    state = {"active": torch.arange(rows, device=device), "prompt": input_ids, "mask": attention_mask,
             "positions": _first_positions(attention_mask), "running": torch.ones(rows, dtype=torch.bool, device=device)}
    cache = DynamicCache(config=model.config) if cache is None else cache
    if streamer is not None:
        streamer.put(input_ids.cpu())
    step_input, step = input_ids, -1
    with torch.no_grad():
        for step in range(max_new_tokens):
            logits = model(input_ids=step_input, attention_mask=state["mask"], position_ids=state["positions"],
                           past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            scores = logits[:, -1].to(copy=True, dtype=torch.float32)
            active = state["active"]
            if logits_processor:
                scores = logits_processor(torch.cat([state["prompt"], new[active, :step]], dim=-1), scores)
            chosen = torch.where(state["running"], scores.argmax(dim=-1), pad)  # a row that stopped writes padding
            new[active, step] = chosen
            if streamer is not None:
                streamer.put(chosen.cpu())
            state["running"] = state["running"] & ~torch.isin(chosen, stops)
            if step == max_new_tokens - 1 or not bool(state["running"].any()):
                break
            if drop_finished and not bool(state["running"].all()):
                chosen = _keep_running(state, cache, chosen)
            step_input = chosen[:, None]
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones((len(chosen), 1))], dim=-1)
            state["positions"] = state["positions"][:, -1:] + 1
    if streamer is not None:
        streamer.end()
    return torch.cat([input_ids, new[:, :step + 1]], dim=-1)


def _keep_running(state: dict, cache, chosen):
    """Drop the rows that stopped from the batch, the cache included; returns the running rows' tokens."""
    kept = state["running"].nonzero()[:, 0]
    cache.batch_select_indices(kept)
    for key in ("active", "prompt", "mask", "positions", "running"):
        state[key] = state[key][kept]
    return chosen[kept]
