"""The LLM track: tokens (pad/EOS/padding side/loss mask) and the `workshop sft` command end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write

BIN = Path(sys.executable).parent
SMALL = ["--max-steps", "4", "--train-rows", "32", "--eval-rows", "4", "--max-new-tokens", "8", "--batch-size", "4"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny():
    from workshop_utils.assets import tiny_llama_path

    return tiny_llama_path()


@pytest.fixture
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(scope="module")
def trainer(tiny):
    """An SFTTrainer on the tiny Llama and 8 real rows, built the way notebook 03 builds it (not trained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from workshop_utils.data import load_instruction_task
    from workshop_utils.chat import to_prompt_completion
    from workshop_utils.recipes.qlora_llama3_sft import ensure_distinct_pad
    from workshop_utils.recipes.qlora_llama3_sft import LORA_TARGETS
    from workshop_utils.routes import use_torch_loss_on_cpu

    torch.set_num_threads(1)
    dd = load_instruction_task(source=str(ROOT / "data" / "medquad"), max_rows={"train": 8, "test": 4})
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    ensure_distinct_pad(tok, model)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    use_torch_loss_on_cpu()
    args = SFTConfig(output_dir="/tmp/unused-sft-test", max_steps=1, per_device_train_batch_size=4, max_length=256,
                     completion_only_loss=True, use_cpu=True, bf16=False, gradient_checkpointing=False,
                     report_to="none", save_strategy="no")
    t = SFTTrainer(model=model, args=args, train_dataset=to_prompt_completion(dd["train"]), processing_class=tok)
    t.rows = dd["train"]
    return t


def _batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


# --------------------------------------------------------------------------- pad token
def test_tiny_llama_pad_is_distinct_and_kept(tokenizer):
    from workshop_utils.recipes.qlora_llama3_sft import ensure_distinct_pad

    action = ensure_distinct_pad(tokenizer)
    assert action.startswith("kept")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_pad_equal_to_eos_is_replaced_by_an_existing_token(tokenizer, tiny):
    from transformers import AutoModelForCausalLM

    from workshop_utils.recipes.qlora_llama3_sft import ensure_distinct_pad

    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer.pad_token = tokenizer.eos_token  # what many hub chat models ship with
    n_vocab = len(tokenizer)
    action = ensure_distinct_pad(tokenizer, model)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id, action
    assert len(tokenizer) == n_vocab  # an existing token was reused, no resize
    assert model.config.pad_token_id == tokenizer.pad_token_id == model.generation_config.pad_token_id


def test_missing_pad_is_added_and_embeddings_resized():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from workshop_utils.recipes.qlora_llama3_sft import NEW_PAD, ensure_distinct_pad

    raw = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "</s>": 2}, unk_token="hello"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    assert tok.pad_token is None
    model = LlamaForCausalLM(LlamaConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=2))
    ensure_distinct_pad(tok, model)
    # "hello" is the unknown token but id 0 is also a real word: the only safe choice here is a new token
    assert tok.pad_token in (NEW_PAD, "hello")
    assert tok.pad_token_id != tok.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


# --------------------------------------------------------------------------- padding side
def test_generation_pads_left_and_training_side_is_restored(tiny, tokenizer):
    from transformers import AutoModelForCausalLM

    from workshop_utils.answers import generate_answers

    model = AutoModelForCausalLM.from_pretrained(tiny)
    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen["ids"], seen["mask"] = kwargs["input_ids"], kwargs["attention_mask"]
        return original(**kwargs)

    model.generate = spy
    tokenizer.padding_side = "right"
    answers = generate_answers(model, tokenizer, ["Define gout.", "My doctor mentioned otitis media. What does that mean?"],
                               max_new_tokens=3)
    assert len(answers) == 2 and all(a.new_tokens <= 3 for a in answers)
    mask = seen["mask"]
    short = int(mask.sum(1).argmin())
    assert mask[short, 0] == 0 and mask[short, -1] == 1  # padding on the left, text at the right end
    assert (seen["ids"][short][mask[short] == 0] == tokenizer.pad_token_id).all()
    assert tokenizer.padding_side == "right"


def test_repetition_penalty_counts_only_the_answer(tiny, tokenizer):
    """Greedy decoding of the random tiny model repeats tokens; a (huge) repetition penalty stops that, and it
    is told where the prompt ends, so the words of the question stay free to use."""
    from transformers import AutoModelForCausalLM

    from workshop_utils.answers import generate_answers

    model = AutoModelForCausalLM.from_pretrained(tiny)
    seen = []
    original = model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        seen.append((kwargs["input_ids"].shape[1], kwargs["logits_processor"], out))
        return out

    model.generate = spy
    questions = ["Define gout.", "What does otitis media mean?"]
    greedy = generate_answers(model, tokenizer, questions, max_new_tokens=12)
    penalised = generate_answers(model, tokenizer, questions, max_new_tokens=12, repetition_penalty=1e4)
    (length, none, plain), (length2, processors, out) = seen
    assert len(none) == 0 and len(processors) == 1 and processors[0].prompt_ignore_length == length2
    def repeats(ids):
        return [len(row) - len(set(row)) for row in ids[:, ids.shape[1] - 12:].tolist()]
    assert sum(repeats(plain)) > 0, "the tiny model was expected to loop under greedy decoding"
    assert sum(repeats(out)) == 0 and [a.text for a in greedy] != [a.text for a in penalised]


def test_training_batch_pads_right(trainer):
    batch = _batch(trainer)
    mask = batch["attention_mask"]
    short = int(mask.sum(1).argmin())
    assert mask[short, 0] == 1 and mask[short, -1] == 0
    assert (batch["input_ids"][short][mask[short] == 0] == trainer.processing_class.pad_token_id).all()


# --------------------------------------------------------------------------- loss mask and EOS
def test_loss_only_on_assistant_tokens_ending_with_eos(trainer):
    from workshop_utils.chat import label_report

    tok = trainer.processing_class
    batch = _batch(trainer)
    report = label_report(batch, tok)
    assert report["problems"] == []
    assert 0 < report["loss_share"] < 1  # the prompt carries no loss (the lines below check exactly which tokens do)
    for row in range(4):
        labels = batch["labels"][row].tolist()
        graded = [t for t in labels if t != -100]
        assert graded[-1] == tok.eos_token_id  # the answer ends with <|eot_id|>: the model learns to stop
        text = tok.decode(graded[:-1])
        assert text.strip() == trainer.rows[row]["response"]  # exactly the assistant's answer, nothing else
        first = labels.index(graded[0])
        assert all(t == -100 for t in labels[:first])  # system prompt, question, headers: no loss
        context = tok.decode(batch["input_ids"][row][:first].tolist())
        assert trainer.rows[row]["instruction"] in context and "assistant" in context


def test_every_training_example_ends_with_eos(trainer):
    eos = trainer.processing_class.eos_token_id
    for example in trainer.train_dataset:
        graded = [t for t in example["labels"] if t != -100]
        assert graded and graded[-1] == eos and graded.count(eos) == 1


def test_label_report_catches_an_unmasked_prompt(trainer):
    from workshop_utils.chat import label_report

    batch = _batch(trainer)
    batch["labels"][0, 1] = batch["input_ids"][0, 1]  # grade a prompt token
    assert label_report(batch, trainer.processing_class)["problems"]


def test_truncation_report_counts_cut_examples(trainer, tokenizer):
    from workshop_utils.chat import to_prompt_completion, truncation_report

    conv = to_prompt_completion(trainer.rows)
    assert truncation_report(tokenizer, conv, 1024)["truncated"] == 0
    cut = truncation_report(tokenizer, conv, 30)
    assert cut["truncated"] == len(conv) and cut["share"] == 1.0 and cut["longest"] > 30


def test_torch_loss_matches_log_softmax():
    import torch

    from workshop_utils.routes import TorchTokenLogProbs

    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(5, 8), torch.randn(11, 8), torch.randint(0, 11, (5,))
    lp, ent, _, _, top1 = TorchTokenLogProbs.apply(hidden, weight, None, targets, 1.0, 4, None, 1.0, ("log_probs", "entropy", "is_top1"))
    ref = torch.log_softmax(hidden @ weight.T, -1)
    assert torch.allclose(lp, ref[torch.arange(5), targets], atol=1e-5)
    assert torch.allclose(ent, -(ref.exp() * ref).sum(-1), atol=1e-5)
    assert (top1 == (ref.argmax(-1) == targets)).all()


# --------------------------------------------------------------------------- the command: bad input
def _jsonl(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


GOOD = [{"instruction": f"Define term {i}.", "response": f"Term {i} is a word."} for i in range(6)]

BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.jsonl", "nope.jsonl: file not found"),
    "empty file": (lambda d: write(d / "empty.jsonl", ""), "empty.jsonl: file is empty; it needs one JSON object per line"),
    "missing field": (lambda d: _jsonl(d / "f.jsonl", [{"instruction": "a", "answer": "b"}]), "missing field 'response' (found: instruction, answer); rename the field or pass the right name (--instruction-field / --response-field)"),
    "not json": (lambda d: write(d / "j.jsonl", json.dumps(GOOD[0]) + "\n{oops\n"), "j.jsonl: row 2 (line 2): not valid JSON"),
    "bad bytes": (lambda d: write(d / "b.jsonl", json.dumps(GOOD[0]).encode() + b"\n\xff\xfe\n"), "b.jsonl: line 2 (row 2), byte"),
    "shared prompt": (
        lambda d: (_jsonl(d / "s" / "train.jsonl", GOOD), _jsonl(d / "s" / "test.jsonl", [GOOD[2]]))[0].parent,
        "same text as train.jsonl row 3",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line(case, tmp_path, capsys, tmp_outputs):
    from workshop_utils.commands.cli import main

    make, expected = BAD_INPUTS[case]
    data = make(tmp_path)
    code = main(["sft", "--data", str(data), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("option", ["--max-steps", "--repetition-penalty"])
def test_a_number_that_must_be_positive_is_one_error_line(option, tmp_path, capsys, tmp_outputs):
    from workshop_utils.commands.cli import main

    code = main(["sft", option, "0", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {option} must be a positive number, got 0" + ("" if option == "--max-steps" else ".0")
    assert not (tmp_path / "out").exists()


def test_custom_field_names_reach_the_loader(tmp_path, capsys, tmp_outputs):
    from workshop_utils.commands.cli import main

    data = _jsonl(tmp_path / "q.jsonl", [{"question": "a?", "answer": "b"}])
    code = main(["sft", "--data", str(data), "--output-dir", str(tmp_path / "o"),
                 "--instruction-field", "question", "--response-field", "reply"])
    err = capsys.readouterr().err
    assert code == 2 and "missing field 'reply'" in err and "q.jsonl" in err


# --------------------------------------------------------------------------- the command end to end
def _sft(out, *extra, env=None, launcher=None, model=None, timeout=300):
    """`workshop sft` on the tiny random Llama (these tests are about plumbing: resume, files, processes).

    On a timeout the command and every process it started go (torchrun's workers lead sessions of their
    own, so a killed launcher would leave them behind), then TimeoutExpired is raised."""
    from workshop_utils.assets import tiny_llama_path

    cmd = (launcher or [str(BIN / "workshop")]) + ["sft", "--output-dir", str(out), *SMALL,
                                                  "--model", str(model or tiny_llama_path()), *extra]
    full_env = {**os.environ, "WORKSHOP_PROFILE": "smoke", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import psutil

        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A run interrupted right after its step-2 checkpoint, then the same command again."""
    out = tmp_path_factory.mktemp("sft") / "run"
    first = _sft(out, env={"WORKSHOP_SFT_INTERRUPT_AT_STEP": "2"})
    first.left = sorted(p.name for p in out.iterdir())
    second = _sft(out)
    return out, first, second


def test_interrupted_run_resumes_to_the_same_step_count(resumed_run):
    out, first, second = resumed_run
    assert first.returncode == 130, first.stderr[-2000:]
    assert "checkpoint-2" in first.left and "metrics.json" not in first.left, first.left
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["resumed_from"] == "checkpoint-2"
    assert "resuming from checkpoint-2" in second.stdout
    assert not list(out.glob("checkpoint-*"))  # a finished run keeps the adapter, not the checkpoints


def test_cli_writes_metrics_and_safetensors_adapter(resumed_run):
    out, _, second = resumed_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("before", "after", "model", "model_parameters", "load_in_4bit", "train_seconds", "tokens_per_second",
                "peak_memory_bytes", "trainable_params", "route"):
        assert key in metrics, key
    for side in ("before", "after"):
        # what answers.score_chat_model returns, less the answers themselves
        assert set(metrics[side]) == {"nll", "rougeL", "eos_rate", "repetition", "decoding", "answered", "references_looping"}
        assert metrics[side]["decoding"].startswith("greedy, repetition penalty")
        assert 0 <= metrics[side]["rougeL"] <= 1 and 0 <= metrics[side]["eos_rate"] <= 1
        assert 0 < metrics[side]["nll"] < 20  # a random model's NLL is about ln(vocabulary) = 8
    assert metrics["route"] == "dense" and metrics["load_in_4bit"] is False
    from workshop_utils.profiles import SMOLLM2_SMOKE

    assert metrics["repetition_penalty"] == SMOLLM2_SMOKE["repetition_penalty"] > 1  # scored as notebooks 01 and 03 score
    assert metrics["tokens_per_second"] > 0 and metrics["train_seconds"] > 0 and metrics["model_parameters"] > 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert (out / "tokenizer.json").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*"))
    assert "ROUGE-L" in second.stdout and "held-out NLL" in second.stdout
    # portable: the config names the base by name, not by this machine's path; the workshop's card, not TRL's template
    from workshop_utils.assets import tiny_llama_path
    from workshop_utils.cards import machine_paths

    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_llama_path().name
    assert machine_paths(out) == []
    card = (out / "README.md").read_text()
    assert "license: other" in card and "`workshop sft`" in card and "huggingface.co/None" not in card


def test_cli_trains_a_gguf_file_in_4bit_on_a_cpu(tmp_path):
    """--model FILE.gguf --load-in-4bit: the packaged SmolLM2 GGUF is converted (once, cached), loaded in NF4
    through bitsandbytes on the CPU and trained for real (one run checks both: each costs a real model load)."""
    from workshop_utils.assets import smollm2_gguf

    out = tmp_path / "nf4"  # the real model: bitsandbytes quantises in blocks of 64, the tiny model's layers do not divide
    done = _sft(out, "--load-in-4bit", "--max-steps", "2", "--train-rows", "8", "--eval-rows", "2", model=smollm2_gguf())
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"].startswith("smollm2-135m-instruct") and 130e6 < metrics["model_parameters"] < 140e6
    assert metrics["route"] == "bnb" and metrics["load_in_4bit"] is True and metrics["steps"] == 2
    # a pretrained chat model (a random one scores about ln 49,152 = 10.8), and NF4 rounding leaves it working
    assert metrics["before"]["nll"] < 5
    assert "route 'bnb'" in done.stdout and "4-bit NF4" in done.stdout
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] > 0 and (out / "adapter_model.safetensors").is_file()
    # the packaged model stands for its hub release, and the card says the weights were the Q4_1 GGUF's
    from huggingface_hub import ModelCard

    from workshop_utils.cards import Q4_1_TAG
    from workshop_utils.profiles import SMOLLM2

    card = ModelCard.load(out / "README.md")
    assert config["base_model_name_or_path"] == SMOLLM2 == card.data.base_model
    assert card.data.license == "apache-2.0" and Q4_1_TAG in card.data.tags and "Q4_1" in card.text


def test_refuses_to_overwrite_a_finished_run(resumed_run, capsys):
    from workshop_utils.commands.cli import main

    out, _, _ = resumed_run
    stamp = (out / "metrics.json").stat().st_mtime
    assert main(["sft", "--output-dir", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "metrics.json" in err
    assert (out / "metrics.json").stat().st_mtime == stamp
