"""fastgen's greedy loop writes the tokens ``model.generate`` writes: one prompt, a left-padded batch, with
and without the answer-only repetition penalty, stopping on an end-of-turn id, streaming, and through
``generate(custom_generate=fastgen.decode)`` as answers.generate_answers calls it."""

import pytest

QUESTIONS = ["Define gout.", "My doctor mentioned otitis media. What does that mean, and is it serious?",
             "What causes anemia?"]


@pytest.fixture(scope="module")
def tiny():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.assets import tiny_llama_path

    torch.manual_seed(0)
    path = tiny_llama_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def _batch(tokenizer, questions):
    from workshop_utils.chat import render_prompts

    return tokenizer(render_prompts(tokenizer, questions), return_tensors="pt", padding=True, add_special_tokens=False)


def _penalty(value, prompt_length):
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(value, prompt_ignore_length=prompt_length)]
                               if value != 1.0 else [])


def _both(model, tokenizer, enc, *, stops, max_new_tokens=12, penalty=1.0, drop_finished=True):
    import torch

    from workshop_utils.fastgen import greedy_generate

    length = enc["input_ids"].shape[1]
    with torch.no_grad():
        plain = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                               pad_token_id=tokenizer.pad_token_id, logits_processor=_penalty(penalty, length))
    fast = greedy_generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                           stop_ids=stops, pad_token_id=tokenizer.pad_token_id,
                           logits_processor=_penalty(penalty, length), drop_finished=drop_finished)
    return plain, fast


@pytest.mark.parametrize("penalty", [1.0, 1e4])
def test_one_prompt_gives_generates_tokens(tiny, penalty):
    from workshop_utils.chat import stop_token_ids

    model, tokenizer = tiny
    plain, fast = _both(model, tokenizer, _batch(tokenizer, QUESTIONS[:1]), stops=stop_token_ids(tokenizer, model),
                        penalty=penalty)
    assert fast.tolist() == plain.tolist()
    new = fast[0, -12:].tolist()
    assert len(new) - len(set(new)) == 0 if penalty > 1 else len(new) - len(set(new)) > 0  # the penalty acts


@pytest.mark.parametrize("drop_finished", [True, False])
@pytest.mark.parametrize("penalty", [1.0, 1e4])
def test_left_padded_batch_gives_generates_tokens(tiny, penalty, drop_finished):
    from workshop_utils.chat import stop_token_ids

    model, tokenizer = tiny
    enc = _batch(tokenizer, QUESTIONS)
    assert (enc["attention_mask"][:, 0] == 0).any(), "the batch was meant to hold left padding"
    plain, fast = _both(model, tokenizer, enc, stops=stop_token_ids(tokenizer, model), penalty=penalty,
                        drop_finished=drop_finished)
    assert fast.tolist() == plain.tolist()


def test_left_padded_batch_sees_generates_logits(tiny):
    """Stricter than equal tokens: each step's next-token logits are the same numbers (the random tiny model's
    greedy choice barely depends on, say, the position ids; its logits do)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from workshop_utils.chat import stop_token_ids
    from workshop_utils.fastgen import greedy_generate

    class Record(LogitsProcessor):
        def __init__(self):
            self.seen = []

        def __call__(self, input_ids, scores):
            self.seen.append(scores.clone())
            return scores

    model, tokenizer = tiny
    enc = _batch(tokenizer, QUESTIONS)
    stops = stop_token_ids(tokenizer, model)
    plain, fast = Record(), Record()
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=stops,
                       pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([plain]))
    greedy_generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=6, stop_ids=stops,
                    pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([fast]))
    assert len(fast.seen) == len(plain.seen) == 6
    assert all(torch.equal(a, b) for a, b in zip(fast.seen, plain.seen))


@pytest.mark.parametrize("drop_finished", [True, False])
def test_stops_on_end_of_turn_and_pads_the_rest(tiny, drop_finished):
    """An id the model writes early in one row (not in the others) made the end-of-turn id: that row ends
    there and is padded after it, the others go on, exactly as generate does. (The random tiny model repeats
    one token under plain greedy decoding; the huge penalty makes its rows differ.)"""
    model, tokenizer = tiny
    enc = _batch(tokenizer, QUESTIONS)
    length = enc["input_ids"].shape[1]
    _, free = _both(model, tokenizer, enc, stops=[tokenizer.eos_token_id], penalty=1e4)  # varied tokens
    rows = free[:, length:].tolist()
    stop = next(t for t in rows[0][1:6] if all(t not in other for other in rows[1:]))
    plain, fast = _both(model, tokenizer, enc, stops=[stop], penalty=1e4, drop_finished=drop_finished)
    assert fast.tolist() == plain.tolist()
    first = fast[0, length:].tolist()
    end = first.index(stop)
    assert end < len(first) - 1 and set(first[end + 1:]) == {tokenizer.pad_token_id}
    assert fast.shape[1] == free.shape[1]  # the other rows still ran to max_new_tokens


def test_streamer_sees_the_prompt_then_each_token(tiny):
    from workshop_utils.chat import stop_token_ids
    from workshop_utils.fastgen import greedy_generate

    model, tokenizer = tiny
    enc = _batch(tokenizer, QUESTIONS[:1])

    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, ids):
            self.puts.append(ids.tolist())

        def end(self):
            self.ended = True

    seen = Recorder()
    out = greedy_generate(model, enc["input_ids"], max_new_tokens=6, stop_ids=stop_token_ids(tokenizer, model),
                          pad_token_id=tokenizer.pad_token_id, streamer=seen)
    assert seen.puts[0] == enc["input_ids"].tolist() and seen.ended
    assert [p[0] for p in seen.puts[1:]] == out[0, enc["input_ids"].shape[1]:].tolist()


def test_generate_with_custom_decode_equals_plain_generate(tiny):
    import torch

    from workshop_utils.chat import stop_token_ids
    from workshop_utils.fastgen import decode

    model, tokenizer = tiny
    enc = _batch(tokenizer, QUESTIONS)
    settings = dict(max_new_tokens=10, do_sample=False, eos_token_id=stop_token_ids(tokenizer, model),
                    pad_token_id=tokenizer.pad_token_id,
                    logits_processor=_penalty(1.3, enc["input_ids"].shape[1]))
    with torch.no_grad():
        plain = model.generate(**enc, **settings)
        fast = model.generate(**enc, **settings, custom_generate=decode)
    assert fast.tolist() == plain.tolist()
    with pytest.raises(ValueError, match="greedy"), torch.no_grad():
        model.generate(**enc, max_new_tokens=2, do_sample=True, custom_generate=decode)
