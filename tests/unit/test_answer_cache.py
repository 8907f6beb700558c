"""answer_cache: a second identical scoring call reads the first one's answers and log-probabilities, and any
change to what the model computes, the prompts or the decoding computes afresh."""

import json

import pytest

QUESTIONS = ["Define gout.", "What causes anemia?", "Is otitis media serious?"]
REFERENCES = ["Gout is a form of arthritis.", "Low iron, among other causes.", "Usually not."]


@pytest.fixture(scope="module")
def tiny():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.assets import tiny_llama_path

    torch.manual_seed(0)
    path = tiny_llama_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture
def cache(tmp_path):
    from workshop_utils.answer_cache import use_cache

    use_cache(tmp_path / "answer-cache")
    yield tmp_path / "answer-cache"
    use_cache(None)


def _answers(model, tokenizer, **kw):
    from workshop_utils.answers import generate_answers

    settings = dict(max_new_tokens=6, batch_size=2, desc="t") | kw
    return generate_answers(model, tokenizer, QUESTIONS, **settings)


def _no_generation(model, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("generate ran: the cached answers were not used")

    monkeypatch.setattr(model, "generate", refuse)


def test_off_by_default_keeps_nothing(tiny, tmp_path):
    from workshop_utils import answer_cache

    assert answer_cache.active() is None
    model, tokenizer = tiny
    _answers(model, tokenizer)
    assert not list(tmp_path.iterdir())


def test_the_same_call_is_read_back_and_says_so(tiny, cache, monkeypatch, capsys):
    model, tokenizer = tiny
    first = _answers(model, tokenizer)
    assert len(list(cache.glob("answers-*.json"))) == 1
    _no_generation(model, monkeypatch)
    again = _answers(model, tokenizer)
    assert again == first
    assert "t: reused (answers of this same model, prompts and decoding" in capsys.readouterr().out


@pytest.mark.parametrize("change", [dict(max_new_tokens=7), dict(repetition_penalty=1.1), dict(batch_size=3),
                                    dict(system_prompt="Answer briefly.")])
def test_another_decoding_or_prompt_is_computed(tiny, cache, change, monkeypatch):
    model, tokenizer = tiny
    _answers(model, tokenizer)
    _no_generation(model, monkeypatch)
    with pytest.raises(AssertionError, match="generate ran"):
        _answers(model, tokenizer, **change)


def test_the_fingerprint_follows_what_the_model_computes(tiny):
    import torch
    from peft import LoraConfig, get_peft_model

    from workshop_utils.answer_cache import model_fingerprint

    base, _ = tiny
    plain = model_fingerprint(base)
    assert model_fingerprint(base) == plain  # stable
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    try:
        assert model_fingerprint(model) == plain  # lora_B starts at zero: the base model's function, bit for bit
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.add_(1e-3)
        trained = model_fingerprint(model)
        assert trained != plain
        with model.disable_adapter():
            assert model_fingerprint(model) == plain
        assert model_fingerprint(model) == trained
    finally:
        model.unload()  # gives the module back without the adapter layers, for the other tests
    assert model_fingerprint(base) == plain


def test_logprobs_are_reused_and_equal(tiny, cache, monkeypatch):
    from workshop_utils.answers import reference_logprobs

    model, tokenizer = tiny
    calls = []
    forward = model.forward

    def counted(*a, **k):
        calls.append(k["input_ids"].shape)
        return forward(*a, **k)

    monkeypatch.setattr(model, "forward", counted)
    first = reference_logprobs(model, tokenizer, QUESTIONS, REFERENCES, batch_size=2, desc="nll")
    assert len(calls) == 1 + 2  # the fingerprint's probe, then two batches
    assert len(list(cache.glob("logprobs-*.json"))) == 1
    calls.clear()
    assert reference_logprobs(model, tokenizer, QUESTIONS, REFERENCES, batch_size=2, desc="nll") == first
    assert calls == [(1, 32)]  # only the probe ran


def test_a_damaged_file_is_computed_again(tiny, cache, monkeypatch):
    from workshop_utils.answers import reference_logprobs

    model, tokenizer = tiny
    first = reference_logprobs(model, tokenizer, QUESTIONS, REFERENCES, desc="nll")
    (path,) = cache.glob("logprobs-*.json")
    path.write_text("{not json")
    again = reference_logprobs(model, tokenizer, QUESTIONS, REFERENCES, desc="nll")
    assert again == first
    assert json.loads(path.read_text())["value"] == [list(x) for x in first]


def test_the_pad_id_changes_no_result(tiny):
    """Why the key leaves the pad id out: 01 pads SmolLM2 with its EOS, 03 with another token; masked padding
    gives the same answers and log-probabilities either way, so 03's "before" may reuse 01's baseline."""
    from transformers import AutoTokenizer

    from workshop_utils.answers import generate_answers, reference_logprobs
    from workshop_utils.assets import tiny_llama_path

    model, tokenizer = tiny
    other = AutoTokenizer.from_pretrained(tiny_llama_path())
    other.pad_token = next(t for t, i in other.get_vocab().items() if i not in (other.pad_token_id, other.eos_token_id))
    assert other.pad_token_id != tokenizer.pad_token_id
    ask = dict(max_new_tokens=8, batch_size=3, desc="t")
    assert generate_answers(model, other, QUESTIONS, **ask) == generate_answers(model, tokenizer, QUESTIONS, **ask)
    assert (reference_logprobs(model, other, QUESTIONS, REFERENCES, batch_size=3)
            == reference_logprobs(model, tokenizer, QUESTIONS, REFERENCES, batch_size=3))


def test_eos_stops_an_answer_also_where_it_pads(tiny):
    """SmolLM2 ships pad = EOS; the EOS must still end an answer (it once did not: no answer ever stopped)."""
    from transformers import AutoTokenizer

    from workshop_utils.assets import tiny_llama_path
    from workshop_utils.chat import stop_token_ids

    model, _ = tiny
    same = AutoTokenizer.from_pretrained(tiny_llama_path())
    same.pad_token = same.eos_token
    assert same.eos_token_id in stop_token_ids(same, model)


def test_03s_model_before_training_shares_01s_key(tiny, cache):
    """01 scores the model as loaded (pad = EOS); 03 scores it after its pad fix (a new pad id in the tokenizer
    and the generation config) with a fresh LoRA adapter on top, and 04 scores 03's trained model with the
    generation config SFTTrainer left (eos as a list): the same function and stops, so the same key."""
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from workshop_utils.answers import generate_answers
    from workshop_utils.assets import tiny_llama_path

    model, tokenizer = tiny
    model = copy.deepcopy(model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # as the model ships: one id
    ask = dict(max_new_tokens=5, batch_size=3, desc="t")
    first = generate_answers(model, tokenizer, QUESTIONS, **ask)
    (stored,) = cache.glob("answers-*.json")
    made_of = json.loads(stored.read_text())["key"]
    assert made_of["rows"] == len(QUESTIONS) and made_of["max_new_tokens"] == 5  # what the key was made of

    fixed = AutoTokenizer.from_pretrained(tiny_llama_path())
    fixed.pad_token = next(t for t, i in fixed.get_vocab().items() if i not in (fixed.pad_token_id, fixed.eos_token_id))
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    wrapped.config.pad_token_id = wrapped.generation_config.pad_token_id = fixed.pad_token_id
    wrapped.generation_config.eos_token_id = [tokenizer.eos_token_id]  # as SFTTrainer leaves it: a list
    assert generate_answers(wrapped, fixed, QUESTIONS, **ask) == first
    assert len(list(cache.glob("answers-*.json"))) == 1  # read back, not computed again
