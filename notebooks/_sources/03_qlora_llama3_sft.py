# %% [markdown]
# # 03 · Teaching a chat model new answers: QLoRA supervised fine-tuning with TRL
#
# In notebook 02 we fine-tuned a classifier: one label per input. Now we teach a **chat model** to
# *write* answers, here short plain-language definitions of medical terms. This is **supervised
# fine-tuning (SFT)**: we show the model conversations (a question and the answer we want) and train it
# to produce the answer.
#
# Three ideas make this fit on modest hardware:
#
# * **LoRA**: freeze the model and train small low-rank matrices added to its linear layers
#   (a fraction of a percent of the parameters).
# * **QLoRA**: additionally store the frozen model in **4-bit** (NF4), so Llama 3 8B needs ~6 GB of GPU
#   memory instead of 16 GB.
# * **TRL's `SFTTrainer`**: a `Trainer` that knows about chat templates, loss masking and padding.
#
# We will measure the model **before and after** on questions it never saw in training, with ROUGE-L
# (word overlap with a reference answer) and the share of answers that **stop** on their own.

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %% [markdown]
# ## Which way do we train?
#
# The same cells run on three kinds of machine; the profile decides the path:
#
# | machine | path | model loading | adapters |
# |---|---|---|---|
# | CUDA GPU + Unsloth installed | `unsloth` | `FastLanguageModel.from_pretrained(..., load_in_4bit=True)` | `FastLanguageModel.get_peft_model` |
# | CUDA GPU, no Unsloth | `bnb` | `AutoModelForCausalLM` + `BitsAndBytesConfig` (4-bit NF4) | peft `LoraConfig` |
# | no GPU | `lora` | `AutoModelForCausalLM` in float32 | peft `LoraConfig` |
#
# Unsloth rewrites parts of transformers at import time for speed (fused kernels, less memory), so we
# import it **only** on the path that uses it, and before transformers. Without a GPU we use plain
# LoRA: bitsandbytes' 4-bit kernels need CUDA, and the CPU models are small enough for full precision.
# Unsloth can train on a CPU too, but its patches buy nothing there and make errors harder to read.

# %%
from workshop_utils.sft import choose_path

sft_path = choose_path(profile)  # on a GPU with Unsloth this imports unsloth (before transformers)
print(sft_path.describe())
print("model:", sft_path.model if not sft_path.model.startswith("/") else "the locally built tiny Llama")

# %%
import torch
import transformers

SEED = 42
transformers.set_seed(SEED)  # the same run twice gives the same numbers
print(f"transformers {transformers.__version__}, torch {torch.__version__}")

# %% [markdown]
# ## The data: questions and answers, held-out prompts kept apart
#
# Each row has an `instruction` (what the user asks) and a `response` (the answer we want). The
# held-out split shares **no prompt** with training: a question seen in training would measure memory,
# not learning. The loader refuses overlapping files; we check it again here.

# %%
from workshop_utils.data import load_instruction_task
from workshop_utils.sft import check_shared_prompts

dataset = load_instruction_task(profile)
print(dataset)
assert check_shared_prompts(dataset) == 0, "a held-out prompt also appears in training"
print("held-out prompts shared with training: 0")
example = dataset["train"][0]
print(f"\ninstruction: {example['instruction']}\nresponse:    {example['response']}")

# %% [markdown]
# ## Loading the model
#
# One cell, three paths. On the GPU paths the weights are stored in 4-bit **NF4** ("normal float",
# suited to normally distributed weights) with **double quantization** (the quantization constants are
# quantized too) and computations run in bf16 (or fp16 on GPUs without bf16, such as a T4).

# %%
MAX_LENGTH = profile.sft_max_length  # set explicitly: TRL's default of 1024 would cut silently

if sft_path.name == "unsloth":
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        sft_path.model, max_seq_length=MAX_LENGTH, load_in_4bit=True, dtype=None  # dtype=None: bf16 if supported
    )
elif sft_path.name == "bnb":
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    compute_dtype = torch.bfloat16 if profile.bf16 else torch.float16
    bnb_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )
    tokenizer = AutoTokenizer.from_pretrained(sft_path.model)
    model = AutoModelForCausalLM.from_pretrained(
        sft_path.model, quantization_config=bnb_config, dtype=compute_dtype, device_map={"": 0}
    )
    # casts norms to fp32, enables input gradients and gradient checkpointing for k-bit training
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sft_path.model)
    model = AutoModelForCausalLM.from_pretrained(sft_path.model, dtype=torch.float32)

print(f"{model.__class__.__name__}, {model.num_parameters():,} parameters, dtype {model.dtype}")

# %% [markdown]
# ## Getting the special tokens right
#
# Three small things decide whether a fine-tuned chat model works:
#
# 1. **A pad token distinct from EOS.** Many chat models ship with `pad_token = eos_token` or none. If
#    padding and "end of answer" are the same token, code that masks padding also hides the real EOS,
#    and the model never learns to stop. We pick an unused token (or add one) when needed.
# 2. **Padding side**: right for training (labels line up), **left** for batched generation (a
#    decoder-only model continues at the right end of the sequence, so that end must be real text).
# 3. **EOS at the end of every answer**: the chat template closes each assistant turn with the
#    end-of-turn token (`<|eot_id|>` for Llama 3). We will check it in a training batch below.

# %%
from workshop_utils.sft import ensure_distinct_pad, small_model_threads

print(ensure_distinct_pad(tokenizer, model))
tokenizer.padding_side = "right"  # training; generation switches to left
assert tokenizer.pad_token_id != tokenizer.eos_token_id
print(f"pad {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id})")
if profile.device == "cpu":
    print("CPU threads:", small_model_threads(sft_path.model))  # 1 for the tiny model: faster, see the docstring

# %% [markdown]
# ## LoRA adapters
#
# LoRA adds to each chosen linear layer `W` a product `B·A` of two thin matrices (rank `r`), scaled by
# `lora_alpha / r`; only `A` and `B` train. `B` starts at zero, so **before training the model answers
# exactly like the base model**: that is how we measure the "before" score below with the same object.
# We target every linear layer of the Llama blocks, attention and MLP, which works better than the
# attention projections alone.
#
# *Offline only:* the tiny stand-in model has **random** weights, so its embeddings mean nothing and
# adapters on top of them can learn little. There we also train the (tied) embedding matrix with
# `modules_to_save`. With a real pretrained model you would not: its embeddings are already good.

# %%
from workshop_utils.sft import is_random_stand_in

random_base = is_random_stand_in(sft_path.model)
if sft_path.name == "unsloth":
    model = FastLanguageModel.get_peft_model(
        model,
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing="unsloth",  # Unsloth's own checkpointing: long sequences in less memory
        random_state=SEED,
    )
else:
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        modules_to_save=["embed_tokens"] if random_base else None,  # random stand-in only (see above)
        ensure_weight_tying=random_base,  # the tiny model ties input embeddings and output head
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)

from workshop_utils.sft import parameter_counts

trainable_params, total_params = parameter_counts(model)
print(f"trainable: {trainable_params:,} of {total_params:,} parameters ({trainable_params / total_params:.2%})")

# %% [markdown]
# On Llama 3 8B, r=16 on these seven projections is about 42 million trainable parameters, about 0.5% of
# 8 billion. Offline the share looks large because the model is tiny and its embedding matrix trains too.

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
#   SmolLM2 templates lack (our tiny model's template has them, see `workshop_utils.assets`).

# %%
from workshop_utils.sft import SYSTEM_PROMPT, to_prompt_completion, truncation_report

train_conversations = to_prompt_completion(dataset["train"], SYSTEM_PROMPT)
first = train_conversations[0]
print(tokenizer.apply_chat_template(first["prompt"] + first["completion"], tokenize=False))

# %% [markdown]
# `max_length` cuts longer examples, and TRL does it silently; a cut answer also loses its EOS. So we
# count how many examples our `MAX_LENGTH` cuts.

# %%
report = truncation_report(tokenizer, train_conversations, MAX_LENGTH)
print(f"max_length {MAX_LENGTH}: {report['truncated']} of {report['examples']} examples cut ({report['share']:.1%}); "
      f"longest {report['longest']} tokens, mean {report['mean']:.0f}")

# %% [markdown]
# ## Before fine-tuning
#
# We ask the held-out questions with **greedy** decoding (reproducible), in batches with **left**
# padding, and score the answers. The tiny offline model has random weights, so expect noise.

# %%
from workshop_utils import estimates
from workshop_utils.sft import generate_answers, score_answers

questions = list(dataset["test"]["instruction"])
references = list(dataset["test"]["response"])
estimates.announce(f"answering {len(questions)} held-out questions", estimates.generation_seconds(profile, len(questions)))
if sft_path.name == "unsloth":
    FastLanguageModel.for_inference(model)  # Unsloth's faster generation mode
answers_before = generate_answers(model, tokenizer, questions, max_new_tokens=profile.max_new_tokens, desc="before")
before = score_answers(answers_before, references)
print(f"before: ROUGE-L {before['rougeL']:.3f}, answers ending with EOS {before['eos_rate']:.0%}")

# %% [markdown]
# ## The training recipe: `SFTConfig` and `SFTTrainer`
#
# `SFTConfig` is `TrainingArguments` plus SFT settings. Worth knowing:
#
# * `max_length`: set it explicitly (see above).
# * `completion_only_loss=True`: loss on the answer only.
# * `include_num_input_tokens_seen="non_padding"`: the trainer counts real tokens, for tokens/s.
# * `gradient_checkpointing` (TRL's default is on): recompute activations instead of storing them. It
#   saves memory on big models; Unsloth brings its own, and the tiny CPU model does not need it.
# * A short run with a relatively high learning rate: LoRA adapters tolerate (and need) larger steps
#   than full fine-tuning.

# %%
from trl import SFTConfig, SFTTrainer

# The offline stand-in starts from random weights: below ~300 steps its answers are still noise, so it
# trains at least that long (about a minute and a half on a laptop). Real models use the profile's steps.
MAX_STEPS = max(profile.sft_max_steps, 300) if random_base else profile.sft_max_steps

sft_config = SFTConfig(
    output_dir=str(profile.outputs() / "sft-checkpoints"),
    max_steps=MAX_STEPS,
    per_device_train_batch_size=profile.sft_batch_size,
    gradient_accumulation_steps=profile.sft_grad_accum,
    learning_rate=profile.sft_learning_rate,
    lr_scheduler_type="cosine",
    warmup_steps=max(1, MAX_STEPS // 20),
    max_length=MAX_LENGTH,
    completion_only_loss=True,
    bf16=profile.bf16,
    fp16=profile.fp16,
    use_cpu=profile.device == "cpu",
    gradient_checkpointing=sft_path.name == "bnb",
    gradient_checkpointing_kwargs={"use_reentrant": False} if sft_path.name == "bnb" else None,
    optim="adamw_torch" if sft_path.name == "lora" else "paged_adamw_8bit",
    logging_steps=max(1, MAX_STEPS // 10),
    save_strategy="no",  # we save the adapter ourselves below
    include_num_input_tokens_seen="non_padding",
    report_to="none",
    seed=SEED,
)

# %% [markdown]
# TRL 1.15 computes the loss with a fused kernel written in Triton, which runs on GPUs only. On a CPU we
# swap in the same computation written in plain PyTorch (`workshop_utils.sft.TorchTokenLogProbs`); on a
# GPU this line changes nothing.

# %%
from workshop_utils.sft import use_torch_loss_on_cpu

print("loss computed in plain PyTorch (no GPU):", use_torch_loss_on_cpu())
if sft_path.name == "unsloth":
    FastLanguageModel.for_training(model)
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
from workshop_utils.sft import label_report, show_example

batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
checked = label_report(batch, tokenizer)
print(show_example(batch, tokenizer))
print(f"\n{checked['loss_share']:.0%} of the real tokens carry loss; problems: {checked['problems'] or 'none'}")
assert not checked["problems"], checked["problems"]

# %% [markdown]
# ## Train
# Watch the loss fall; `mean_token_accuracy` is the share of answer tokens the model predicts exactly.

# %%
from workshop_utils.metrics import gib, measure

estimates.announce(f"{MAX_STEPS} SFT steps", estimates.sft_train_seconds(profile, steps=MAX_STEPS))
with measure(profile.device) as cost:
    train_output = trainer.train()
tokens_seen = trainer.state.num_input_tokens_seen
tokens_per_second = tokens_seen / cost["seconds"]
print(f"{cost['seconds']:.0f} s, {tokens_seen:,} tokens ({tokens_per_second:,.0f} tokens/s), "
      f"peak memory {gib(cost['peak_memory_bytes'])} ({'GPU' if profile.device == 'cuda' else 'process RSS'})")

# %%
from workshop_utils import plots

plots.training_curve(trainer.state.log_history, metric="mean_token_accuracy", title="SFT: loss and token accuracy");

# %% [markdown]
# ## After fine-tuning
# The same questions, the same greedy decoding.

# %%
estimates.announce(f"answering {len(questions)} held-out questions", estimates.generation_seconds(profile, len(questions)))
if sft_path.name == "unsloth":
    FastLanguageModel.for_inference(model)
answers_after = generate_answers(trainer.model, tokenizer, questions, max_new_tokens=profile.max_new_tokens, desc="after")
after = score_answers(answers_after, references)

from workshop_utils.sft import side_by_side

print(side_by_side(questions, references, answers_before, answers_after, n=3))

# %%
from workshop_utils import envinfo

envinfo.print_table(
    [("ROUGE-L", f"{before['rougeL']:.3f}", f"{after['rougeL']:.3f}"),
     ("answers ending with EOS", f"{before['eos_rate']:.0%}", f"{after['eos_rate']:.0%}"),
     ("mean answer length (tokens)", f"{sum(a.new_tokens for a in answers_before) / len(questions):.1f}",
      f"{sum(a.new_tokens for a in answers_after) / len(questions):.1f}")],
    headers=("held-out questions", "before", "after"),
)
plots.before_after({"base model": before, "fine-tuned": after}, title="Held-out questions");

# %% [markdown]
# ## What it cost, and saving the adapter
#
# We record the scores and costs for the summary, and save **only the adapter** (a few MB for Llama 3
# 8B, in safetensors) with the tokenizer: notebook 04 loads it on top of the base model.

# %%
from workshop_utils.paths import display_path
from workshop_utils.results import Results

results = Results.for_profile(profile)
baseline_01 = results.get("01_baseline_evaluation", "llm")
if baseline_01:
    print(f"notebook 01 measured the base model at ROUGE-L {baseline_01['rougeL']:.3f} (here: {before['rougeL']:.3f})")
record = results.record("03_qlora_llama3_sft", "sft", {
    "before": before,
    "after": after,
    "train_seconds": round(cost["seconds"], 2),
    "tokens_per_second": round(tokens_per_second, 1),
    "peak_memory_bytes": int(cost["peak_memory_bytes"]),
    "trainable_params": trainable_params,
    "path": sft_path.name,
})
print(f"trainable parameters: {trainable_params:,} ({trainable_params / total_params:.2%}); "
      f"wall time {cost['seconds']:.0f} s; {tokens_per_second:,.0f} tokens/s; peak memory {gib(cost['peak_memory_bytes'])}")

adapter_dir = profile.outputs() / "sft-adapter"
trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
tokenizer.save_pretrained(adapter_dir)
from workshop_utils.sft import saved_weight_files

weights = saved_weight_files(adapter_dir)
print(f"saved to {display_path(adapter_dir)}: {', '.join(sorted(p.name for p in adapter_dir.iterdir()))}")
assert weights and all(w.endswith(".safetensors") for w in weights), weights

# %% [markdown]
# ## Self-check
# Fine-tuning must beat the base model on questions it never saw; the fine-tuned model should also have
# learned to stop.

# %%
print(f"ROUGE-L rose from {before['rougeL']:.2f} to {after['rougeL']:.2f}; "
      f"{after['eos_rate']:.0%} of answers now stop with EOS (before: {before['eos_rate']:.0%}).")
assert after["rougeL"] > before["rougeL"], "fine-tuning did not improve ROUGE-L on the held-out questions"
assert after["eos_rate"] >= before["eos_rate"], "the fine-tuned model stops less often than the base model"
print("✅ the fine-tuned adapter answers held-out questions better than the base model")
