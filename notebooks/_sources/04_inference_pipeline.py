# %% [markdown]
# # 04 · Using the fine-tuned models: `pipeline`, adapters and merging
#
# Training is half the job; the other half is *using* what we trained. This notebook loads the two
# models the earlier notebooks saved and puts them to work:
#
# 1. the **classifier** from notebook 02, through `pipeline("text-classification")`: predictions with
#    probabilities, and what the batch size does to speed;
# 2. the **chat model** from notebook 03: the base model plus its LoRA adapter (`PeftModel`), answers
#    before and after fine-tuning side by side, then the adapter **merged** into the weights so it can
#    ship as one ordinary model;
# 3. two small **live demos** you can type into.
#
# It needs `outputs/<profile>/classifier/` (notebook 02) and `outputs/<profile>/sft-adapter/`
# (notebook 03) from the same profile; if one is missing, the cell that needs it says which notebook
# makes it.

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %% [markdown]
# This notebook uses what notebooks 02 and 03 saved. We check for both now, so that a missing one
# stops the notebook here, with one sentence naming the notebook to run first, rather than half-way.

# %%
import time
from threading import Thread

import pandas as pd
import psutil
import torch
import transformers
from peft import PeftConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TextIteratorStreamer,
    pipeline,
)

from workshop_utils import demo, estimates, metrics, plots
from workshop_utils.answer_cache import use_cache
from workshop_utils.answers import score_chat_model
from workshop_utils.cards import local_copy, make_portable
from workshop_utils.chat import SYSTEM_PROMPT, stop_token_ids
from workshop_utils.data import load_classification_task, load_instruction_task
from workshop_utils.fastgen import greedy_generate
from workshop_utils.metrics import gib, measure
from workshop_utils.paths import display_path
from workshop_utils.results import Results

classifier_dir = demo.require(profile.outputs() / "classifier", "02_full_finetune_trainer")
adapter_dir = demo.require(profile.outputs() / "sft-adapter", "03_qlora_llama3_sft")

# %%
SEED = 42
transformers.set_seed(SEED)
results = Results.for_profile(profile)
use_cache(profile.outputs() / "answer-cache")  # reuse answers this model already gave to the same prompts (01 says how)
transformers.logging.set_verbosity_error()
pd.set_option("display.max_colwidth", 90)

# %% [markdown]
# ## Part 1 · The classifier in a `pipeline`
# A `pipeline` bundles the three steps every prediction needs: **tokenize** the input, run the
# **model**, and **post-process** the logits into labels with probabilities (a softmax). We give it the
# folder notebook 02 saved: it holds the weights, the config (with the label names we set there,
# `id2label`) and the tokenizer, so the pipeline tokenizes exactly as in training.

# %%
classifier = pipeline(
    "text-classification",
    model=str(classifier_dir),
    tokenizer=str(classifier_dir),
    device=profile.device,
)
print("loaded", display_path(classifier_dir), "| labels:", classifier.model.config.id2label)

# %% [markdown]
# Our task takes **two** sentences. A plain string would be read as one text, so a pair goes in as a
# dict with `text` and `text_pair`: the tokenizer then builds `[CLS] s1 [SEP] s2 [SEP]` as in training.
# `top_k=None` returns the probability of *every* label instead of only the winner, which tells you
# how sure the model is.

# %%
new_pairs = [
    {"text": "The company said its profit rose 12 percent in the third quarter.",
     "text_pair": "Third-quarter profit was up 12 percent, the company said."},
    {"text": "The company said its profit rose 12 percent in the third quarter.",
     "text_pair": "The company plans to open three new stores next year."},
    {"text": "The museum will stay closed on Monday for repairs.",
     "text_pair": "Repairs will keep the museum closed on Monday."},
]
for pair, scores in zip(new_pairs, classifier(new_pairs, top_k=None)):
    shown = ", ".join(f"{s['label']} {s['score']:.2f}" for s in scores)
    print(f"{pair['text'][:45]:45} | {pair['text_pair'][:45]:45} -> {shown}")

# %% [markdown]
# ### Does the pipeline agree with the training run?
# The pipeline should score the validation pairs exactly as `Trainer.evaluate()` did in notebook 02: same
# weights, same tokenizer, same rows. If it does not, something differs between training and serving
# (a different tokenizer, truncation, label mapping), which is the classic deployment bug.

# %%
clf_data, text_columns = load_classification_task(profile)
validation = clf_data["validation"]
label2id = {name: int(i) for name, i in classifier.model.config.label2id.items()}
val_inputs = [{"text": a, "text_pair": b} for a, b in zip(validation[text_columns[0]], validation[text_columns[1]])]
estimates.announce(f"classifying {len(val_inputs)} validation pairs", estimates.classifier_eval_seconds(profile, len(val_inputs)))
val_predictions = classifier(val_inputs, batch_size=32, truncation=True, max_length=profile.clf_max_length)
pipeline_scores = metrics.accuracy_f1([label2id[p["label"]] for p in val_predictions], list(validation["label"]))
recorded = results.require("02_full_finetune_trainer", "classifier")["after"]
print(f"pipeline: accuracy {pipeline_scores['accuracy']:.3f} | recorded by notebook 02: {recorded['accuracy']:.3f}")

# %% [markdown]
# ### Batch size, throughput and latency
# Serving trades **latency** (how long one request waits) against **throughput** (how many requests per
# second). Batching several inputs into one forward pass uses the hardware better, so throughput rises
# with the batch size, until padding (every input in a batch is padded to the longest) and memory eat the
# gain. A chatbot answering one user cares about latency; a nightly job scoring a million rows cares about
# throughput.

# %%
bench_inputs = val_inputs[:32]
batch_sizes = [1, 8, 32]
estimates.announce(f"timing {len(bench_inputs)} pairs at batch sizes {batch_sizes}",
                   estimates.batch_benchmark_seconds(profile, len(bench_inputs), batch_sizes))
classifier(bench_inputs[:8], batch_size=8)  # warm-up: the first call pays one-off costs


def time_batches(inputs, batch_size):
    start = time.perf_counter()
    classifier(inputs, batch_size=batch_size, truncation=True, max_length=profile.clf_max_length)
    seconds = time.perf_counter() - start
    return {"batch size": batch_size, "samples/s": len(inputs) / seconds, "ms/sample": 1000 * seconds / len(inputs)}


benchmark = pd.DataFrame([time_batches(bench_inputs, b) for b in batch_sizes])
print(benchmark.round(1).to_string(index=False))
plots.batch_benchmark(benchmark["batch size"], benchmark["samples/s"], benchmark["ms/sample"]);

# %% [markdown]
# ## Part 2 · The chat model: base + LoRA adapter
# Notebook 03 saved only the **adapter**: the small LoRA matrices (a few MB) plus the tokenizer, not a
# copy of the base model. To use it we load the base model and put the adapter on top with
# `PeftModel.from_pretrained`. One base model can serve many adapters this way.
#
# Two settings matter for generating in batches:
# * `padding_side="left"`: a decoder-only model continues the *last* token of each row, so the padding
#   must go on the left, or the model would continue after a run of pad tokens;
# * a pad token different from EOS, so padding is never mistaken for "end of answer".

# %%
tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
tokenizer.padding_side = "left"
dtype = torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else torch.float32

base_model = AutoModelForCausalLM.from_pretrained(profile.llm_model, dtype=dtype, device_map=profile.device)
chat_model = PeftModel.from_pretrained(base_model, str(adapter_dir))
chat_model.eval()
print(f"base {profile.llm_model.split('/')[-1]} + adapter from {display_path(adapter_dir)}")
adapter_params = sum(p.numel() for name, p in chat_model.named_parameters() if "lora_" in name)
all_params = sum(p.numel() for p in chat_model.parameters())
print(f"the adapter adds {adapter_params:,} parameters to {all_params - adapter_params:,} ({adapter_params / all_params:.2%})")

# %% [markdown]
# `pipeline("text-generation")` accepts a conversation (a list of `{"role", "content"}` messages) and
# applies the tokenizer's chat template itself. We decode **greedily** (`do_sample=False`: always the
# most likely next token), so the answers are reproducible, and cap the length with `max_new_tokens`.
# We keep the special tokens in the raw output for one reason: to see whether an answer ended with the
# end-of-turn token (the model chose to stop) or ran into the length cap.

# %%
generator = pipeline("text-generation", model=chat_model, tokenizer=tokenizer)
generation_settings = dict(do_sample=False, max_new_tokens=profile.max_new_tokens, return_full_text=False,
                           skip_special_tokens=False)
eos_ids = chat_model.generation_config.eos_token_id
eos_texts = set(tokenizer.convert_ids_to_tokens(eos_ids if isinstance(eos_ids, list) else [eos_ids]))


def generate(questions, batch_size=16):
    """(clean answer, stopped by itself?) for each question, greedy, batched, with 03's system prompt."""
    chats = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}] for q in questions]
    outputs = generator(chats, batch_size=batch_size, **generation_settings)
    answers = []
    for out in outputs:
        raw = out[0]["generated_text"].replace(tokenizer.pad_token, "").rstrip()
        stopped = any(raw.endswith(t) for t in eos_texts)
        for special in tokenizer.all_special_tokens:
            raw = raw.replace(special, "")
        answers.append((raw.strip(), stopped))
    return answers


# %% [markdown]
# A few held-out questions (topics no training row mentions) through the pipeline, with the adapter on:

# %%
held_out = load_instruction_task(profile)["test"]
questions, references = list(held_out["instruction"]), list(held_out["response"])
shown = questions[:3]
estimates.announce(f"{len(shown)} answers through the pipeline", estimates.generation_seconds(profile, len(shown)))
for question, (answer, stopped) in zip(shown, generate(shown)):
    print(f"Q: {question}\nA: {answer[:300]}{'' if stopped else '  [cut at max_new_tokens]'}\n")

# %% [markdown]
# ### Before and after, measured as notebook 03 measures
# The adapter can be switched off without reloading anything: inside `disable_adapter()` the model *is*
# the base model, so one model in memory gives us both columns. For the figures we do not use the
# pipeline's plain greedy decoding: we call `score_chat_model`, the one scoring function notebook 03 and
# `workshop sft` call, with the profile's decoding, so the numbers here are the same measurement as 03's:
#
# * **NLL** of the reference answer of every held-out question (teacher-forced; lower is better);
# * the model **answers** the first questions, and we score those answers: **ROUGE-L** (overlap with the
#   reference, 0 to 1), the **stop rate** (share of answers the model ended itself, with its end-of-turn
#   token, before the length cap) and **looping** (share of answers that repeat a phrase).

# %%
n_answered = min(len(questions), profile.llm_generate_rows or len(questions))
estimates.announce(
    f"scoring {len(questions)} reference answers and answering {n_answered} questions, with and without the adapter",
    2 * (estimates.nll_seconds(profile, len(questions)) + estimates.generation_seconds(profile, n_answered)))
score_settings = dict(max_new_tokens=profile.max_new_tokens, repetition_penalty=profile.repetition_penalty,
                      answered=n_answered)
with chat_model.disable_adapter():
    base_scores = score_chat_model(chat_model, tokenizer, questions, references, desc="base", **score_settings)
tuned_scores = score_chat_model(chat_model, tokenizer, questions, references, desc="fine-tuned", **score_settings)

side_by_side = pd.DataFrame({
    "question": questions[:n_answered],
    "base model": [a.shown() for a in base_scores["answers"]],
    "fine-tuned": [a.shown() for a in tuned_scores["answers"]],
    "reference": references[:n_answered],
})
side_by_side.head(4)

# %% [markdown]
# The base chat model tends to write long, general answers that run into the length cap; the fine-tuned
# one has learned MedQuAD's shorter answers. The caption says how the answers were decoded: a table of
# answer scores means little without it.

# %%
FIGURES = {"nll": "NLL of the references", "rougeL": "ROUGE-L", "eos_rate": "stop rate", "repetition": "looping"}
llm_scores = {name: {key: scores[key] for key in FIGURES}
              for name, scores in (("base", base_scores), ("fine-tuned", tuned_scores))}
print(f"NLL over {len(questions)} held-out references; answers to {n_answered} of them, {tuned_scores['decoding']}, "
      f"at most {profile.max_new_tokens} new tokens")
print(pd.DataFrame(llm_scores).T.rename(columns=FIGURES).round(3).to_string())
sft_record = results.get("03_qlora_llama3_sft", "sft") or {}
if "after" in sft_record:
    print("notebook 03 recorded, with the same function and settings (on the model it had just trained):",
          {FIGURES[k]: round(v, 3) for k, v in sft_record["after"].items() if k in FIGURES})

# %% [markdown]
# ## Merging the adapter into the model
# Keeping the adapter separate is flexible, but every forward pass does the extra LoRA products. Merging
# adds the update `scale · B @ A` into each adapted weight once and leaves a plain `transformers` model: no
# `peft` needed to serve it, no extra cost per token. peft does it with `merge_and_unload()` on a model in
# memory (exercise 3 does that for the classifier), and merging into 4-bit weights would round the small
# update away, so for Llama 3 8B that means the 16-bit base model in memory: 8 billion weights of 2 bytes,
# 16 GB, more than a free Colab T4 has of GPU memory (15 GB) or of RAM (12.7 GB).
#
# So `merge_adapter` below does the same arithmetic one tensor at a time, on the CPU: it reads each 16-bit
# base weight from the model's safetensors files, adds the adapter's update (computed in float32) and
# writes safetensors shards of at most 2 GB. RAM holds one shard and one weight, never a whole copy of the
# model (Llama 3 8B's largest weight, the embedding, is 128,256 × 4,096 × 2 bytes, about 1 GB), and the GPU
# is not touched; the disk needs room for the 16-bit weights (downloaded once) and the merged copy, 16 GB
# each for Llama 3 8B. The other way that fits a T4 is Unsloth's `save_pretrained_merged(dir, tokenizer,
# save_method="merged_16bit")`: it dequantises the 4-bit weights layer by layer on the GPU and spills to disk
# past 75% of GPU memory, but it merges into the NF4-rounded weights rather than the original ones, and on
# a machine with two physical cores or fewer (Colab) it saves pickles instead of safetensors unless given
# `safe_serialization=None`. Every profile runs the same function: SmolLM2 on a CPU, Llama 3 8B on a GPU.

# %% tags=["export"]
# export
import gc
import json
import math
import shutil
from pathlib import Path

import torch

from workshop_utils import WorkshopError

MAX_SHARD_SIZE = "2GB"  # the most merged weights held in RAM at once, and the size of each file written


def lora_updates(adapter_dir) -> dict:
    """{base weight name: (A, B, scale)} for every layer a saved LoRA adapter changes (peft's config and loader)."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights
    from peft.utils.other import get_pattern_key

    config = PeftConfig.from_pretrained(str(adapter_dir))
    if config.peft_type != "LORA" or getattr(config, "fan_in_fan_out", False):
        raise WorkshopError(f"{adapter_dir}: merge_adapter merges LoRA adapters of linear layers only "
                            f"(this one is {config.peft_type}); merge it with merge_and_unload() instead")
    pairs: dict = {}
    for key, tensor in load_peft_weights(str(adapter_dir), device="cpu").items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise WorkshopError(f"{adapter_dir}: {key} is not a LoRA matrix (a resized embedding, a bias, DoRA?); "
                                "merge_adapter merges LoRA A/B matrices only: use merge_and_unload() for this one")
        pairs.setdefault(module, {})[kind[0]] = tensor
    updates = {}
    for module, ab in pairs.items():
        r = ab["A"].shape[0]  # rank_pattern, if any, is already in the shapes
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
        updates[f"{module}.weight"] = (ab["A"], ab["B"], alpha / (math.sqrt(r) if config.use_rslora else r))
    return updates


def base_weight_files(base_model) -> tuple[Path, list[Path]]:
    """The base model's folder and its safetensors files: a local folder, or its Hub snapshot (downloaded once)."""
    folder = Path(base_model)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(base_model), allow_patterns=[
            "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files or not (folder / "config.json").is_file():
        raise WorkshopError(f"{base_model}: no config.json and .safetensors weights to merge into; "
                            "give the 16-bit base model's Hub id or folder")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        raise WorkshopError(f"{base_model} is quantised ({config['quantization_config'].get('quant_method')}): "
                            "merge into the 16-bit base model (profile.llm_model_bnb), not into rounded weights")
    return folder, files


def merged_tensor(weight, update, dtype):
    """weight + scale * B @ A, computed in float32 and stored in dtype; a weight LoRA left alone is only cast."""
    if update is None:
        return weight.to(dtype) if weight.is_floating_point() else weight
    lora_a, lora_b, scale = update
    delta = scale * (lora_b.float() @ lora_a.float())
    if delta.shape != weight.shape:
        raise WorkshopError(f"the adapter's update has shape {tuple(delta.shape)} but the base weight "
                            f"{tuple(weight.shape)}: was the adapter trained on this base model?")
    return (weight.float() + delta).to(dtype)


def merge_adapter(adapter_dir, merged_dir, *, base_model, dtype, max_shard_size=MAX_SHARD_SIZE) -> Path:
    """Merge a LoRA adapter into base_model's weights and save them as safetensors shards, with its config.

    One tensor at a time, on the CPU: read a base weight, add the adapter's scaled B @ A, cast to dtype,
    put it in the shard being filled, write the shard when it is full. RAM holds one shard (at most
    max_shard_size) plus one tensor, never a whole copy of the model; the GPU is not used.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers.utils.hub import convert_file_size_to_int

    folder, files = base_weight_files(base_model)
    updates, limit = lora_updates(adapter_dir), convert_file_size_to_int(max_shard_size)
    merged_dir = Path(merged_dir)
    merged_dir.mkdir(parents=True, exist_ok=True)
    for old in [*merged_dir.glob("*.safetensors"), *merged_dir.glob("*.safetensors.index.json")]:
        old.unlink()  # an earlier merge's files
    shard, shards, sizes = {}, [], []
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                tensor = merged_tensor(weights.get_tensor(name), updates.pop(name, None), dtype)
                if shard and sum(sizes) + tensor.nbytes > limit:
                    shards.append(write_shard(shard, merged_dir, len(shards), save_file))
                    shard, sizes = {}, []
                shard[name] = tensor
                sizes.append(tensor.nbytes)
    if shard:
        shards.append(write_shard(shard, merged_dir, len(shards), save_file))
    del shard
    gc.collect()
    if updates:
        raise WorkshopError(f"the adapter changes {len(updates)} weights that {base_model} does not have "
                            f"(e.g. {next(iter(updates))}): was it trained on another base model?")
    finish_folder(merged_dir, folder, shards, dtype)
    return merged_dir


def write_shard(shard, merged_dir, index, save_file):
    """Write one shard under a temporary name; returns (path, {weight name: bytes})."""
    path = merged_dir / f"part-{index + 1:05d}.safetensors"
    save_file(shard, str(path), metadata={"format": "pt"})
    return path, {name: tensor.nbytes for name, tensor in shard.items()}


def finish_folder(merged_dir, base_folder, shards, dtype):
    """Name the shards as transformers does, write their index, the config (new dtype) and generation config."""
    from transformers import AutoConfig

    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    weight_map = {}
    for (path, sizes), name in zip(shards, names):
        path.rename(merged_dir / name)
        weight_map.update(dict.fromkeys(sizes, name))
    if len(shards) > 1:
        total = sum(n for _, sizes in shards for n in sizes.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (merged_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    config = AutoConfig.from_pretrained(str(base_folder))
    config.dtype = dtype
    config.save_pretrained(str(merged_dir))
    if (base_folder / "generation_config.json").is_file():
        shutil.copyfile(base_folder / "generation_config.json", merged_dir / "generation_config.json")

# %% [markdown]
# ### Does the merged model compute what base + adapter computed?
# Comparing greedy answers word for word only works in float32: in 16 bits, rounding the merged weights
# changes a few logits a little, and one different token changes the rest of the answer. So we compare
# **log-probabilities**: each token of a few held-out reference answers, read teacher-forced, gets
# `log p(token | everything before it)` from the adapter model, from the base model (adapter switched off)
# and from the merged model. Two figures:
#
# * the **largest difference**, merged vs adapter model, must be within the tolerance of the merged weights'
#   dtype: 1e-3 in float32; 0.25 in float16 and 1.0 in bfloat16, whose rounding moves log-probabilities more
#   (SmolLM2 with a 10-step smoke-profile adapter, 4 held-out answers, on a CPU: 4e-5 in float32, 0.05 in
#   float16, 0.44 in bfloat16);
# * the **share of the adapter's effect kept**: of the change the adapter makes (adapter model minus base
#   model, over all tokens), how much the merged model makes too (the slope of one on the other). A correct
#   merge keeps about all of it; one that forgot the scale `lora_alpha / r` (2 here) keeps about half, and
#   one that merged nothing keeps none. It must lie between 0.8 and 1.5. The largest difference alone cannot
#   tell a wrong merge from 16-bit rounding: in bfloat16 the same SmolLM2 test gave 0.44 for a correct merge
#   and 0.35 for one at half the scale, while the share kept was 1.24 and 0.70.
#
# We take the adapter model's and the base model's log-probabilities now, while the adapter can still be
# switched off.

# %% tags=["export"]
# export
from workshop_utils.answers import answer_token_ids

# the largest |difference| of a reference token's log-probability allowed between the adapter model and the
# merged model, by the merged weights' dtype; a merge loaded back in 4-bit is rounded again: no bound
MERGE_TOLERANCE = {torch.float32: 1e-3, torch.float16: 0.25, torch.bfloat16: 1.0, "4-bit": math.inf}
KEPT_RANGE = (0.8, 1.5)  # the share of the adapter's effect on the log-probabilities the merged model must keep


def reference_logprobs(model, tokenizer, instructions, references, *, max_answer_tokens=64) -> list:
    """log p(token | everything before it) for the first tokens of each reference answer (teacher-forced,
    one conversation at a time so no padding is involved), one float32 CPU tensor per question."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for instruction, reference in zip(instructions, references):
            prompt, answer = answer_token_ids(tokenizer, instruction, reference)
            answer = answer[:max_answer_tokens]
            logits = model(input_ids=torch.tensor([prompt + answer], device=device)).logits[0, len(prompt) - 1:-1]
            targets = torch.tensor(answer, device=device)[:, None]
            out.append(logits.float().log_softmax(-1).gather(-1, targets)[:, 0].cpu())
    return out


def merge_check(adapter, merged, base, *, tolerance, kept_range=KEPT_RANGE) -> dict:
    """Compare the merged model's log-probabilities with the adapter model's and the base model's.

    ``largest_difference``: max |merged - adapter|; ``adapter_effect``: max |base - adapter|; ``kept``: the
    share of the adapter's change the merged model makes, sum((merged - base) * (adapter - base)) /
    sum((adapter - base)^2): 1 for a merge that keeps it all, 0 for one that merged nothing. ``ok``: the
    largest difference is within ``tolerance`` and ``kept`` within ``kept_range``.
    """
    adapter, merged, base = (torch.cat(list(x)) for x in (adapter, merged, base))
    change = adapter - base
    largest = float((merged - adapter).abs().max())
    kept = float(((merged - base) * change).sum() / (change ** 2).sum().clamp_min(1e-12))
    ok = largest <= tolerance and kept_range[0] <= kept <= kept_range[1]
    return {"largest_difference": largest, "adapter_effect": float(change.abs().max()), "kept": kept,
            "tolerance": tolerance, "ok": ok}

# %%
check_questions, check_references = questions[:4], references[:4]
adapter_logprobs = reference_logprobs(chat_model, tokenizer, check_questions, check_references)
with chat_model.disable_adapter():
    base_logprobs = reference_logprobs(chat_model, tokenizer, check_questions, check_references)

# %% [markdown]
# Now the merge. On a GPU the merged weights keep the base model's bfloat16; on a CPU they are float32, as
# the model we just used. The merge does not touch the GPU, so the 4-bit model can stay there meanwhile.

# %%
merged_dir = profile.outputs() / "sft-merged"
merge_dtype = torch.bfloat16 if profile.device == "cuda" else torch.float32
rss_before = psutil.Process().memory_info().rss
with measure("cpu") as merge_cost:
    merge_adapter(adapter_dir, merged_dir, base_model=profile.llm_model_bnb, dtype=merge_dtype)
tokenizer.save_pretrained(str(merged_dir))
make_portable(merged_dir, profile.llm_model_bnb, title="Medical question answering model (SFT, merged)",
              summary="Notebook 03's LoRA adapter merged into the base model's weights. Not medical advice.",
              task="text-generation", dataset=profile.llm_data, made_by=f"notebook 04, profile `{profile.name}`",
              scores={})
merge_extra_memory = max(0, merge_cost["peak_memory_bytes"] - rss_before)
print(f"merged in {merge_cost['seconds']:.1f} s; the process's memory rose by at most {gib(merge_extra_memory)} "
      f"(sampled every 0.05 s) while it ran")
print("saved", display_path(merged_dir), ":", sorted(p.name for p in merged_dir.iterdir()))

# %% [markdown]
# Before loading the merged model we let go of the adapter model, so that one model sits on the GPU at a
# time. On the GPU profile the merged folder is loaded back in 4-bit NF4, as notebook 03 loads (the 16-bit
# one would not fit a T4): the comparison is then between the adapter on the 4-bit base and a
# **re-quantised merge**, whose merged weights were rounded to 4 bits again. That rounding moves the
# log-probabilities about as much as a short fine-tune does: SmolLM2 with the 10-step adapter, loaded this
# way on a CPU, gave a largest difference of 0.66 against an adapter effect of 0.73, yet kept 1.14 of the
# adapter's change (half the scale: 0.56). So there the largest difference is shown, not bounded, and the
# share kept is checked. On a CPU the merged model loads in float32, as the adapter model did.

# %%
del generator, chat_model, base_model  # gc was imported with merge_adapter above
gc.collect()
if torch.cuda.is_available():
    torch.cuda.empty_cache()

if profile.load_in_4bit:
    from transformers import BitsAndBytesConfig

    from workshop_utils.recipes.qlora_llama3_sft import nf4_compute_dtype

    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=nf4_compute_dtype(profile))
    merged_model = AutoModelForCausalLM.from_pretrained(str(merged_dir), quantization_config=nf4,
                                                        dtype=nf4_compute_dtype(profile), device_map=profile.device)
else:
    merged_model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32, device_map=profile.device)
merged_model.eval()
merged_logprobs = reference_logprobs(merged_model, tokenizer, check_questions, check_references)
check = merge_check(adapter_logprobs, merged_logprobs, base_logprobs,
                    tolerance=MERGE_TOLERANCE["4-bit" if profile.load_in_4bit else merge_dtype])
print(f"over {sum(len(t) for t in adapter_logprobs)} reference tokens: largest difference merged vs adapter model "
      f"{check['largest_difference']:.1e} (allowed: {check['tolerance']:.0e}); the adapter itself changes them by up to "
      f"{check['adapter_effect']:.2f}, and the merged model keeps {check['kept']:.3f} of that change "
      f"(allowed: {KEPT_RANGE[0]} to {KEPT_RANGE[1]})")
assert check["ok"], "the merged model does not compute what base + adapter computed: is the update lost or mis-scaled?"
generator = pipeline("text-generation", model=merged_model, tokenizer=tokenizer)  # exercise 2 samples with it

# %% [markdown]
# ## Part 3 · Live demos
# Each demo is a text box and a button wired to a plain Python function. Type, click, and the function's
# answer appears (the chat's while it is written). The functions are ordinary code: you can call them directly too,
# which is what the cell does when nobody is there to click (CI).

# %%
def classify_pair(text: str) -> str:
    """'sentence 1 || sentence 2' -> the label probabilities."""
    first, _, second = text.partition("||")
    if not second.strip():
        return "write two sentences separated by ||"
    scores = classifier({"text": first.strip(), "text_pair": second.strip()}, top_k=None)
    return ", ".join(f"{s['label']}: {s['score']:.2f}" for s in scores)


classifier_demo = demo.text_demo(
    "Paraphrase or not? (two sentences separated by ||)", classify_pair,
    value="The meeting was moved to Friday. || They rescheduled the meeting for Friday.", button="Classify")
display(classifier_demo)
print("example:", classify_pair("The meeting was moved to Friday. || They rescheduled the meeting for Friday."))

# %% [markdown]
# The chat demo shows the answer **while it is written**, as a chat application does. `generate` can hand each
# new token to a *streamer*; `TextIteratorStreamer` turns the tokens into text and lets us read it in a loop
# (`for piece in streamer`), while the generation runs in a second thread. The loop here is
# `fastgen.greedy_generate`: the same forward passes and the same greedy tokens as `generate`, with fewer
# steps around each one (it is what `score_chat_model` above decoded with; `docs/benchmarks.md` has its speed
# beside `generate`'s on a 2-core machine). A chat keeps its **turns**: each question goes to the model after
# the earlier questions and answers, all written by the chat template, and the answer ends at the model's
# end-of-turn token. Under the answer: how many tokens, how fast, and how long until the first words showed.

# %%
end_of_turn = stop_token_ids(tokenizer, merged_model)  # the tokenizer's EOS and the model's end-of-turn ids


def chat(history, question):
    """Stream the merged model's greedy answer to ``question`` after the earlier turns ``history``:
    yields (answer so far, note); the last note says how fast it went."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history,
                {"role": "user", "content": question.strip() or "What is high blood pressure?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    written = {}

    def write():  # runs in its own thread and puts each new token into the streamer
        written["ids"] = greedy_generate(merged_model, prompt["input_ids"], prompt["attention_mask"],
                                         max_new_tokens=profile.max_new_tokens, stop_ids=end_of_turn,
                                         pad_token_id=tokenizer.pad_token_id, streamer=streamer)

    start, first_words, answer = time.perf_counter(), None, ""
    thread = Thread(target=write)
    thread.start()
    for piece in streamer:  # text arrives here while the model is still writing
        first_words = first_words or time.perf_counter() - start
        answer += piece
        yield answer, ""
    thread.join()
    seconds, ids = time.perf_counter() - start, written["ids"][0, prompt["input_ids"].shape[1]:]
    stopped = int(ids[-1]) in end_of_turn
    yield answer, (f"{len(ids)} tokens in {seconds:.1f} s: {len(ids) / seconds:.1f} tokens/s; first words after "
                   f"{first_words or seconds:.2f} s" + ("" if stopped else "; cut at max_new_tokens"))


chat_demo = demo.chat_demo("Ask the fine-tuned chat model", chat, value=questions[-1])
display(chat_demo)
for answer, note in chat([], questions[-1]):
    pass
print("example:", answer, f"\n({note})")

# %% [markdown]
# ## Self-check
# Three things must hold: the pipeline reproduces notebook 02's validation accuracy, the merged model
# computes what base + adapter computed (checked above), and fine-tuning changed the chat model's behaviour
# in the right direction: more answers that end by themselves, or more overlap with the references. The
# `smoke` profile (CI) trains only a few steps and answers only a few questions, so its figures move by
# chance (one answer more or less that stops, a few points of ROUGE-L either way); there the check is
# weaker, the same rule as notebook 03's: the fine-tuned model must stop at least as often as the base
# model and keep its ROUGE-L no more than 0.05 below the base model's. The line printed says which rule was
# checked.

# %%
results.record("04_inference_pipeline", "classifier_pipeline", {**pipeline_scores, "rows": len(val_inputs)})
results.record("04_inference_pipeline", "benchmark", benchmark.round(2).to_dict(orient="records"))
results.record("04_inference_pipeline", "sft", {
    "before": llm_scores["base"], "after": llm_scores["fine-tuned"], "decoding": tuned_scores["decoding"],
    "prompts": len(questions), "answered": n_answered, "merged_path": display_path(merged_dir),
    "merge_check": {k: check[k] for k in ("largest_difference", "adapter_effect", "kept")},
    "merge_extra_memory_bytes": int(merge_extra_memory),
})

assert abs(pipeline_scores["accuracy"] - recorded["accuracy"]) <= 0.02, (
    f"pipeline accuracy {pipeline_scores['accuracy']:.3f} differs from notebook 02's {recorded['accuracy']:.3f}: "
    "check that the pipeline loads the same tokenizer and labels")
base, tuned = llm_scores["base"], llm_scores["fine-tuned"]
stops = f"stop rate {base['eos_rate']:.2f} -> {tuned['eos_rate']:.2f}"
rouge = f"ROUGE-L {base['rougeL']:.3f} -> {tuned['rougeL']:.3f}"
if profile.name == "smoke":
    assert tuned["eos_rate"] >= base["eos_rate"] and tuned["rougeL"] > base["rougeL"] - 0.05, (
        "after a few steps the fine-tuned chat model stops less often or its ROUGE-L collapsed: is generation broken?")
    verdict = (f"after {profile.sft_max_steps} training steps the fine-tuned model stops at least as often ({stops}) "
               f"and its ROUGE-L is no more than 0.05 below the base model's ({rouge}): checked, not an improvement claim")
else:
    assert tuned["eos_rate"] > base["eos_rate"] or tuned["rougeL"] > base["rougeL"], (
        "the fine-tuned chat model neither stops more often nor matches the references better than the base model")
    improved = [text for text, up in ((stops, tuned["eos_rate"] > base["eos_rate"]),
                                      (rouge, tuned["rougeL"] > base["rougeL"])) if up]
    verdict = "fine-tuning improved " + " and ".join(improved)
print(f"✅ the pipeline scores {pipeline_scores['accuracy']:.3f} accuracy (notebook 02: {recorded['accuracy']:.3f}); "
      f"{verdict} ({tuned_scores['decoding']}); the merged model keeps {check['kept']:.3f} of the adapter's "
      f"effect on the log-probabilities, largest difference {check['largest_difference']:.1e}.")

# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · Predict, then measure.** Before running anything: where will batch size 4 land in the
# table, for *ms/sample* and for *samples/s*? Closer to batch 1 or to batch 8? Write your guess down,
# then time it with `time_batches(bench_inputs, 4)`.

# %% tags=["solution"]
print(pd.DataFrame([time_batches(bench_inputs, 4)]).round(1).to_string(index=False))
print(benchmark.round(1).to_string(index=False))
# The gain is steepest for the first few rows of a batch (fixed per-call costs are shared), then it
# flattens: on a CPU the cores are soon busy, and bigger batches pad more. On a GPU throughput keeps
# rising until memory or padding wins. What a user feels is latency per *request*, and batching only
# makes that worse when a request has to wait for a batch to fill.

# %% [markdown]
# **2 (medium) · Greedy or sampled?** Answer two held-out questions with sampling (`do_sample=True`,
# `temperature=0.7`, `top_p=0.9`), three answers to each from one call (`num_return_sequences=3`, both
# questions in one batch), after `transformers.set_seed(0)`. Which parts of the answers change? Run the
# cell again: what does the seed fix? When would you prefer sampling to greedy decoding?

# %% tags=["solution"]
transformers.set_seed(0)
sampled = generator([[{"role": "user", "content": q}] for q in questions[:2]], batch_size=2,
                    do_sample=True, temperature=0.7, top_p=0.9, num_return_sequences=3,
                    max_new_tokens=min(24, profile.max_new_tokens), return_full_text=False)
for question, samples in zip(questions[:2], sampled):
    for n, sample in enumerate(samples):
        print(f"sample {n} | {question[:40]} -> {sample['generated_text'][:80]!r}")
transformers.set_seed(SEED)
# Greedy gives the same answer every time: right for evaluation and tests. Sampling varies the wording
# (more with a higher temperature): useful for creative text or for drawing several candidates. The seed
# fixes the draws: the same seed before the same call gives the same three answers again, which is what a
# test comparing sampled answers would need.

# %% [markdown]
# **3 (hard) · Serve the LoRA classifier.** Notebook 02 also saved a LoRA *adapter* for the classifier
# (`outputs/<profile>/classifier-lora/`). Load it on top of the pretrained encoder, merge it, put it in a
# `text-classification` pipeline, and compare its accuracy on the first 32 validation pairs with the full
# fine-tune's. Hint: the adapter's `adapter_config.json` names its base model by hub id; offline,
# `workshop_utils.cards.local_copy` turns that id into the packaged copy.

# %% tags=["solution"]
lora_dir = demo.require(profile.outputs() / "classifier-lora", "02_full_finetune_trainer")
lora_base_id = PeftConfig.from_pretrained(str(lora_dir)).base_model_name_or_path  # a hub id
lora_base = AutoModelForSequenceClassification.from_pretrained(local_copy(lora_base_id, offline=profile.offline))
lora_classifier = pipeline(
    "text-classification",
    model=PeftModel.from_pretrained(lora_base, str(lora_dir)).merge_and_unload(),
    tokenizer=AutoTokenizer.from_pretrained(str(lora_dir)),
    device=profile.device,
)
few = val_inputs[:32]
gold = validation[:32]["label"]
for name, clf in (("full fine-tune", classifier), ("LoRA", lora_classifier)):
    labels = [clf.model.config.label2id[p["label"]] for p in clf(few, batch_size=32)]
    print(f"{name:>14}: accuracy {metrics.accuracy_f1(labels, gold)['accuracy']:.3f} on {len(few)} pairs")
# The adapter's config names the base model by hub id; we load that base (offline: its packaged copy),
# PeftModel adds the LoRA matrices and the trained head (modules_to_save), and merge_and_unload() turns it
# into a plain model the pipeline serves. With the Hub reachable, AutoPeftModelForSequenceClassification
# does the first two steps in one call.
