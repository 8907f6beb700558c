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
from workshop_utils import demo

classifier_dir = demo.require(profile.outputs() / "classifier", "02_full_finetune_trainer")
adapter_dir = demo.require(profile.outputs() / "sft-adapter", "03_qlora_llama3_sft")

# %%
import time

import pandas as pd
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from workshop_utils import estimates, metrics, plots
from workshop_utils.data import load_classification_task, load_instruction_task
from workshop_utils.paths import display_path
from workshop_utils.results import Results

SEED = 42
transformers.set_seed(SEED)
results = Results.for_profile(profile)
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
estimates.announce(
    f"timing {len(bench_inputs)} pairs at batch sizes {batch_sizes}",
    # batch size 1 runs about 5x slower per pair than the batched evaluation the estimate assumes
    estimates.classifier_eval_seconds(profile, len(bench_inputs)) * (5 + len(batch_sizes)),
)
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
from peft import PeftModel

from workshop_utils.chat import SYSTEM_PROMPT  # the system message notebook 03 trained with

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
# ### Before and after, side by side
# The adapter can be switched off without reloading anything: inside `disable_adapter()` the model *is*
# the base model. So one model in memory gives us both columns, on questions held out from training.

# %%
held_out = load_instruction_task(profile)["test"]
n_eval = min(len(held_out), 16, profile.llm_generate_rows or 16)  # at most 16: enough to see the difference
questions = held_out[:n_eval]["instruction"]
references = held_out[:n_eval]["response"]
estimates.announce(f"generating {2 * n_eval} answers (base and fine-tuned)", estimates.generation_seconds(profile, 2 * n_eval))
with chat_model.disable_adapter():
    base_answers = generate(questions)
tuned_answers = generate(questions)

side_by_side = pd.DataFrame({
    "question": questions,
    "base model": [a for a, _ in base_answers],
    "fine-tuned": [a for a, _ in tuned_answers],
    "reference": references,
})
side_by_side.head(4)

# %% [markdown]
# Two numbers summarise the table: **ROUGE-L** (overlap with the reference answer, 0 to 1) and the
# **EOS rate** (share of answers the model ended itself). The base chat model tends to write long, general
# answers that run into the length cap; the fine-tuned one has learned MedQuAD's shorter answers.

# %%
llm_scores = {
    "base": {"rougeL": metrics.rouge_l([a for a, _ in base_answers], references),
             "eos_rate": sum(s for _, s in base_answers) / n_eval},
    "fine-tuned": {"rougeL": metrics.rouge_l([a for a, _ in tuned_answers], references),
                   "eos_rate": sum(s for _, s in tuned_answers) / n_eval},
}
print(pd.DataFrame(llm_scores).T.round(3).to_string())
sft_record = results.get("03_qlora_llama3_sft", "sft") or {}
if "after" in sft_record:
    print("recorded by notebook 03 (its own prompt set):",
          {k: round(v, 3) for k, v in sft_record["after"].items() if isinstance(v, (int, float))})

# %% [markdown]
# ## Merging the adapter into the model
# Keeping the adapter separate is flexible, but every forward pass does the extra LoRA matrix products.
# `merge_and_unload()` adds `B @ A` (scaled) into the base weights once and returns a plain
# `transformers` model: no `peft` needed to serve it, no extra cost per token. We save it (safetensors)
# with the tokenizer, reload it as an ordinary model, and check that it answers **exactly** as the
# adapter did.
#
# With a 4-bit base model (the GPU profile) merging into the quantised weights would round the update
# away, so there we merge into a 16-bit copy of the base model instead.
#
# `merge_and_unload()` works **in place**: afterwards `chat_model` no longer has a switchable adapter.
# To compare base and fine-tuned again, re-run the cells from Part 2.

# %%
fixed_question = questions[0]
estimates.announce("three short greedy answers (adapter, merge, reload)", estimates.generation_seconds(profile, 3))
adapter_answer = generate([fixed_question])[0][0]

if profile.load_in_4bit:  # GPU profile: merge into 16-bit weights, not into the 4-bit ones
    full_base = AutoModelForCausalLM.from_pretrained(profile.llm_model_bnb, dtype=dtype, device_map=profile.device)
    to_merge = PeftModel.from_pretrained(full_base, str(adapter_dir))
    generator = pipeline("text-generation", model=to_merge, tokenizer=tokenizer)
    adapter_answer = generate([fixed_question])[0][0]  # the reference is the 16-bit model + adapter
else:
    to_merge = chat_model
merged = to_merge.merge_and_unload()

merged_dir = profile.outputs() / "sft-merged"
merged.save_pretrained(str(merged_dir))  # model.safetensors (+ config, generation config)
tokenizer.save_pretrained(str(merged_dir))
print("saved", display_path(merged_dir), ":", sorted(p.name for p in merged_dir.iterdir()))

reloaded = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=dtype, device_map=profile.device)
generator = pipeline("text-generation", model=reloaded, tokenizer=tokenizer)
merged_answer = generate([fixed_question])[0][0]
print("question:", fixed_question)
print("adapter :", adapter_answer)
print("merged  :", merged_answer)
assert merged_answer == adapter_answer, "the merged model answers differently from base + adapter"

# %% [markdown]
# ## Part 3 · Live demos
# Each demo is a text box and a button wired to a plain Python function. Type, click, and the function's
# answer appears under the button. The functions are ordinary code: you can call them directly too,
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

# %%
def ask(text: str) -> str:
    """One question -> the merged chat model's greedy answer."""
    answer, stopped = generate([text.strip() or "What is high blood pressure?"])[0]
    return answer + ("" if stopped else "  [...cut at max_new_tokens]")


chat_demo = demo.text_demo("Ask the fine-tuned chat model", ask, value=questions[-1], button="Ask")
display(chat_demo)
print("example:", ask(questions[-1]))

# %% [markdown]
# ## Self-check
# Three things must hold: the pipeline reproduces notebook 02's validation accuracy, the merged model
# answers exactly like base + adapter (checked above), and fine-tuning changed the chat model's behaviour
# in the right direction: more answers that end by themselves, or more overlap with the references. The
# `smoke` profile (CI) trains only ten steps, and a dozen greedy answers then move by chance (one answer
# more or less that stops, a few points of ROUGE-L either way), so there the fine-tuned model only has
# to stop as often as the base model and keep its ROUGE-L within 0.05: the same rule as notebook 03's.

# %%
results.record("04_inference_pipeline", "classifier_pipeline", {**pipeline_scores, "rows": len(val_inputs)})
results.record("04_inference_pipeline", "benchmark", benchmark.round(2).to_dict(orient="records"))
results.record("04_inference_pipeline", "sft", {"before": llm_scores["base"], "after": llm_scores["fine-tuned"],
                                                 "prompts": n_eval, "merged_path": display_path(merged_dir)})

assert abs(pipeline_scores["accuracy"] - recorded["accuracy"]) <= 0.02, (
    f"pipeline accuracy {pipeline_scores['accuracy']:.3f} differs from notebook 02's {recorded['accuracy']:.3f}: "
    "check that the pipeline loads the same tokenizer and labels")
base, tuned = llm_scores["base"], llm_scores["fine-tuned"]
if profile.name == "smoke":
    assert tuned["eos_rate"] >= base["eos_rate"] and tuned["rougeL"] > base["rougeL"] - 0.05, (
        "after a few steps the fine-tuned chat model stops less often or its ROUGE-L collapsed: is generation broken?")
else:
    assert tuned["eos_rate"] > base["eos_rate"] or tuned["rougeL"] > base["rougeL"], (
        "the fine-tuned chat model neither stops more often nor matches the references better than the base model")
print(f"✅ the pipeline scores {pipeline_scores['accuracy']:.3f} accuracy (notebook 02: {recorded['accuracy']:.3f}); "
      f"fine-tuning took the EOS rate from {base['eos_rate']:.2f} to {tuned['eos_rate']:.2f} and ROUGE-L from "
      f"{base['rougeL']:.3f} to {tuned['rougeL']:.3f}; the merged model answers exactly like the adapter.")

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
# fine-tune's. Hint: `AutoPeftModelForSequenceClassification` reads the base model's name from the
# adapter's config.

# %% tags=["solution"]
from peft import AutoPeftModelForSequenceClassification

lora_dir = demo.require(profile.outputs() / "classifier-lora", "02_full_finetune_trainer")
lora_classifier = pipeline(
    "text-classification",
    model=AutoPeftModelForSequenceClassification.from_pretrained(str(lora_dir)).merge_and_unload(),
    tokenizer=AutoTokenizer.from_pretrained(str(lora_dir)),
    device=profile.device,
)
few = val_inputs[:32]
gold = validation[:32]["label"]
for name, clf in (("full fine-tune", classifier), ("LoRA", lora_classifier)):
    labels = [clf.model.config.label2id[p["label"]] for p in clf(few, batch_size=32)]
    print(f"{name:>14}: accuracy {metrics.accuracy_f1(labels, gold)['accuracy']:.3f} on {len(few)} pairs")
# The adapter's config names the base model; AutoPeft loads it, adds the LoRA matrices and the trained
# head (modules_to_save), and merge_and_unload() turns it into a plain model the pipeline serves.
