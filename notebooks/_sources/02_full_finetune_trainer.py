# %% [markdown]
# # 02 · Fine-tuning a classifier with `Trainer` (full and LoRA)
#
# Notebook 01 measured where we start: a pretrained encoder with a random head scores about chance,
# and always predicting the majority class sets the floor. Now we train, in the standard Hugging Face way:
#
# 1. tokenize the sentence pairs, with **truncation** and **dynamic padding**;
# 2. describe the run with `TrainingArguments` and run it with `Trainer`;
# 3. look at the learning curve and the confusion matrix, and compare with the baseline;
# 4. train the same model again with **LoRA** (a few small matrices instead of every weight) and compare
#    accuracy, time, memory and trainable parameters.
#
# The models are saved for notebook 04 (inference with `pipeline`).

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %%
import csv
import dataclasses

import evaluate
import numpy as np
import pandas as pd
import transformers
from datasets import Dataset, load_dataset
from peft import get_peft_model
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

from workshop_utils import estimates, metrics, plots
from workshop_utils.cards import make_portable
from workshop_utils.data import check_classification_dataset, classification_file_errors, describe
from workshop_utils.metrics import metric_path
from workshop_utils.paths import display_path
from workshop_utils.results import Results
from workshop_utils.tracking import tracked_history

SEED = 42
transformers.set_seed(SEED)
results = Results.for_profile(profile)
transformers.logging.set_verbosity_error()  # keeps the expected "newly initialized weights" notice out of the way

# %% [markdown]
# ## The data
# The same task as notebook 01: is sentence 2 a paraphrase of sentence 1? `load_dataset` reads it: GLUE MRPC from
# the Hub, or offline `data/paraphrase`, GLUE-style TSV files (tab-separated, no quoting: a quote is text).
# `check_classification_dataset` then checks every row (a bad one is a one-line error naming file, row and column),
# makes the label a `ClassLabel` and keeps the profile's rows (a seeded subset in smoke).

# %%
with classification_file_errors(profile):  # what load_dataset cannot read becomes one line naming the file and row
    if profile.hub:
        raw = load_dataset(profile.clf_data, profile.clf_data_config)  # "nyu-mll/glue", "mrpc"
    else:
        files = {split: f"{profile.clf_data}/{split}.tsv" for split in ("train", "validation")}
        raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE)
clf_data, text_columns = check_classification_dataset(raw, profile)
label_names = ["not_paraphrase", "paraphrase"]
print(describe(clf_data))

# %% [markdown]
# ## Tokenization: truncate, but do not pad yet
# The tokenizer turns each pair into `[CLS] sentence 1 [SEP] sentence 2 [SEP]` token ids. We **truncate**
# to `max_length` tokens so an unusually long pair cannot blow up memory, and we do **not** pad here.
#
# Why not `padding="max_length"`? It pads *every* pair to the same length (512 tokens for BERT if you
# forget to set `max_length`), and the model then spends almost all of its compute on padding: MRPC
# pairs are about 50 tokens long. Instead `DataCollatorWithPadding` pads **each batch to its longest
# pair** when the batch is built. Same results, a fraction of the work: `scripts/benchmark_padding.py`
# measures the difference, and [docs/benchmarks.md](../docs/benchmarks.md) has its figures.
#
# One step further would be to put pairs of similar length in the same batch
# (`TrainingArguments(train_sampling_strategy="group_by_length")`), so even less padding is left. It is
# another 1.26x on a 2-core CPU (1.42x on real MRPC; `docs/benchmarks.md`), but batches that are sorted
# by length are less random, and in our runs the model learned less with them; we leave it off.

# %%
tokenizer = AutoTokenizer.from_pretrained(profile.clf_model)


def tokenize(batch):
    return tokenizer(*[batch[c] for c in text_columns], truncation=True, max_length=profile.clf_max_length)


encoded = clf_data.map(tokenize, batched=True, remove_columns=text_columns)
lengths = np.array([len(ids) for ids in encoded["train"]["input_ids"]])
print(f"tokens per pair: mean {lengths.mean():.0f}, max {lengths.max()} (truncated at {profile.clf_max_length})")
print(f"padding everything to {profile.clf_max_length} would make {1 - lengths.mean() / profile.clf_max_length:.0%} of the tokens padding")

# %%
collator = DataCollatorWithPadding(tokenizer)
batch = collator([encoded["train"][i] for i in range(8)])
print("one batch of 8:", {k: tuple(v.shape) for k, v in batch.items()}, "<- padded to the longest of these 8 only")

# %% [markdown]
# ## The baseline to beat
# Notebook 01 recorded the untrained model's scores and the majority-class baseline. If you have not
# run it in this profile, we measure the untrained model here instead (it is the same model with the
# same seed, so the numbers match).

# %%
majority = results.get("01_baseline_evaluation", "majority") or metrics.majority_baseline(
    clf_data["train"]["label"], clf_data["validation"]["label"]
)
baseline = results.get("01_baseline_evaluation", "classifier")
print("baseline from notebook 01:" if baseline else "notebook 01 has not run in this profile: the baseline is measured below, before training.")
if baseline:
    print(f"  untrained head accuracy {baseline['accuracy']:.3f}, F1 {baseline['f1']:.3f}; majority class accuracy {majority['accuracy']:.3f}")

# %% [markdown]
# ## The model
# The pretrained encoder plus a fresh 2-way head, exactly as in notebook 01. `set_seed` right before
# creating it makes the random head the same one every run.
#
# Cells marked `# export` are the recipe itself: `workshop train-classifier` runs this same code (it is
# copied into `workshop_utils/recipes/full_finetune_trainer.py` when the notebooks are built), so what you
# read here is what the command does.

# %% tags=["export"]
# export
import transformers
from transformers import AutoModelForSequenceClassification


def classification_model(model_id, label_names, seed):
    """The pretrained encoder with a fresh classification head, the same head for the same seed."""
    transformers.set_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        model_id,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )

# %%
model = classification_model(profile.clf_model, label_names, SEED)
full_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"trainable parameters: {full_trainable:,} (every weight of the model)")

# %% [markdown]
# ## `TrainingArguments`: the whole recipe in one place
# Every number comes from the run profile, so the function needs nothing else (and an output folder):
# copy the cell into a script, define `profile`, and it runs.
#
# * `num_train_epochs`, `learning_rate`, `per_device_train_batch_size`: the profile's (below); evaluation
#   needs no gradients, so it can take batches twice as large;
# * `eval_strategy="steps"` / `save_strategy="steps"` with `eval_steps` and `save_steps` below 1: a number
#   smaller than 1 is a **fraction of the whole run**, so `1 / (2 * epochs)` evaluates and checkpoints
#   twice per epoch whatever the size of the data. On a set as small as MRPC accuracy moves by a point or
#   two between neighbouring evaluations;
# * `load_best_model_at_end=True` with `metric_for_best_model="accuracy"`: at the end, go back to the best
#   checkpoint rather than keep the last one (F1 alone would reward calling everything a paraphrase);
# * `save_total_limit=2`: keep disk use small (the best checkpoint and the latest). `save_only_model=True`
#   drops the optimizer state from the checkpoints: we never resume in the notebook. `workshop
#   train-classifier` turns it off on the arguments this function returns, so it can pick up an
#   interrupted run;
# * `weight_decay=0.01`: a little regularisation, as in the BERT paper;
# * `bf16`/`fp16` on a GPU that supports them (half the memory traffic, same accuracy), fp32 on CPU;
# * `seed` and `data_seed`: the same initialisation and the same order of batches every run (42, our
#   `SEED`);
# * `logging_steps`: the training loss is logged five times per epoch, often enough to draw a curve;
# * `report_to="tensorboard"`: every logged value also goes to TensorBoard, a tracker that keeps its record in
#   files next to the run (`<output_dir>/runs/`): no account, no login, no network. Below we plot the curves
#   from those files; `tensorboard --logdir outputs/` in a terminal shows them live in the browser.
#
# The learning rate, batch size and epochs come from the profile: for bert-base on MRPC, 3 epochs at
# 2e-5 with batch 32 (the BERT paper's search space); the small MiniLM prefers a larger rate. LoRA (below)
# calls the same function with a 10x larger learning rate in the profile.

# %% tags=["export"]
# export
from transformers import TrainingArguments


def classifier_training_args(profile, output_dir):
    """The fine-tuning recipe: every number in it comes from the run profile."""
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=profile.clf_epochs,
        learning_rate=profile.clf_learning_rate,
        per_device_train_batch_size=profile.clf_batch_size,
        per_device_eval_batch_size=2 * profile.clf_batch_size,
        weight_decay=0.01,
        eval_strategy="steps",
        eval_steps=1 / (2 * profile.clf_epochs),  # below 1: a fraction of the run, here twice per epoch
        save_strategy="steps",
        save_steps=1 / (2 * profile.clf_epochs),  # a checkpoint at each evaluation
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        save_total_limit=2,
        save_only_model=True,
        logging_steps=1 / (5 * profile.clf_epochs),  # five points per epoch on the loss curve
        bf16=profile.bf16,
        fp16=profile.fp16,
        use_cpu=profile.use_cpu,
        seed=42,
        data_seed=42,
        report_to="tensorboard",
    )

# %%
run_dir = profile.outputs() / "checkpoints" / "02-full"
training_args = classifier_training_args(profile, run_dir)
print(f"{training_args.num_train_epochs:g} epochs at lr {training_args.learning_rate:g}, batch "
      f"{training_args.per_device_train_batch_size}; evaluated and saved every {training_args.eval_steps:.3g} "
      "of the run (twice per epoch)")

# %% [markdown]
# ## How to score: 🤗 `evaluate`
# GLUE MRPC reports accuracy and F1. The `evaluate` library gives every metric the same interface:
# `evaluate.load(name)` returns a module, `compute(predictions=..., references=...)` scores them, and
# `evaluate.combine([...])` scores several at once. `evaluate.load("accuracy")` fetches the metric's code
# from the Hub; offline, `metric_path` gives `evaluate.load` the folder of the workshop's own module of the same
# name instead (same inputs, same output key, computed with scikit-learn).

# %%
accuracy = evaluate.load(metric_path("accuracy", profile))  # "accuracy" with the Hub, a local folder offline
f1 = evaluate.load(metric_path("f1", profile))
accuracy_and_f1 = evaluate.combine([accuracy, f1])
print(accuracy_and_f1.compute(predictions=[1, 1, 0, 1], references=[1, 0, 0, 1]))  # 3 of 4 right; F1 of class 1: 0.8

# %% [markdown]
# `Trainer` calls `compute_metrics` after each evaluation with the logits and labels of the whole
# evaluation set. Ours takes the most likely class and asks the two modules for their scores; with more
# than two classes (`workshop train-classifier --label-names ...`) it asks F1 for the mean over classes
# (`average="macro"`), an option `combine` would not pass on. This is the recipe's scoring too, so it
# loads the same modules with `metrics.load_metric`: once per process, kept in memory, and the local module if the
# Hub fails mid-run.

# %% tags=["export"]
# export
import numpy as np

from workshop_utils.metrics import load_metric


def compute_metrics(eval_pred):
    """Accuracy and F1 (of class 1 with two classes, as GLUE reports it; macro-F1 with more), via `evaluate`."""
    logits, labels = eval_pred
    if isinstance(logits, tuple):  # some models return more than the logits
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    n_classes = logits.shape[-1]
    f1_options = {} if n_classes <= 2 else {"average": "macro", "labels": list(range(n_classes))}
    return {**load_metric("accuracy").compute(predictions=predictions, references=labels),
            **load_metric("f1").compute(predictions=predictions, references=labels, **f1_options)}

# %% [markdown]
# ## `Trainer`: model + arguments + data + how to score

# %%
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=encoded["train"],
    eval_dataset=encoded["validation"],
    processing_class=tokenizer,
    data_collator=collator,
    compute_metrics=compute_metrics,
)

if baseline is None:
    # predict() scores without logging: evaluate() before train() would make TensorBoard's writer before the run
    # has its folder, and it would write into the current directory instead
    measured = trainer.predict(encoded["validation"], metric_key_prefix="eval").metrics
    baseline = {"accuracy": measured["eval_accuracy"], "f1": measured["eval_f1"]}
    print(f"untrained head (measured here): accuracy {baseline['accuracy']:.3f}, F1 {baseline['f1']:.3f}")
    # evaluating drew from the random generator (the data loader's seed): reseed, so training below is
    # the same whether the baseline was measured here or read from notebook 01
    transformers.set_seed(SEED)

# %%
n_train = len(encoded["train"])
estimates.announce(
    f"full fine-tuning, {n_train:,} pairs x {profile.clf_epochs:g} epochs",
    estimates.classifier_train_seconds(profile, n_train, profile.clf_epochs)
    + estimates.classifier_eval_seconds(profile, len(encoded["validation"])) * profile.clf_epochs,
)
with metrics.measure(profile.device) as full_cost:
    train_output = trainer.train()
# what training itself holds (weights, a gradient per trainable weight, AdamW's state), read off the model
# and the optimizer; the process figure also counts everything this session has loaded so far
full_state = metrics.training_state_bytes(model, trainer.optimizer)
MEMORY_LABEL = ("peak GPU memory allocated during the run (torch.cuda.max_memory_allocated, reset at its start; "
                "counts tensors earlier cells still hold)" if profile.device == "cuda"
                else "process peak RSS during the run (includes what earlier cells loaded)")
print(f"trained in {full_cost['seconds']:.0f} s, {train_output.metrics['train_samples_per_second']:.1f} samples/s; "
      f"gradients {metrics.gib(full_state['gradients'])} + AdamW state {metrics.gib(full_state['optimizer_state'])}; "
      f"{MEMORY_LABEL}: {metrics.gib(full_cost['peak_memory_bytes'])}")

# %% [markdown]
# ## What happened during training
# The training loss should fall; the evaluation accuracy (right axis) should rise and then level off.
# If the evaluation loss climbs while the training loss keeps falling, the model is starting to
# memorise the training pairs: that is what `load_best_model_at_end` protects us from.
#
# The curves come from the tracker's record, not from the trainer in memory: `tracked_history` finds the
# newest run folder TensorBoard wrote under the output folder and reads its event files back (TensorBoard's
# own reader). The same files open live in TensorBoard's page: `tensorboard --logdir outputs/` in a
# terminal, or in a notebook cell `%load_ext tensorboard` then `%tensorboard --logdir outputs/`.

# %%
tb_run, history = tracked_history(trainer.args.output_dir)
print(f"TensorBoard's record of this run: {display_path(tb_run)}, {len(history)} logged steps")
plots.training_curve(history, metric="eval_accuracy", title="Full fine-tuning (read back from TensorBoard)");

# %%
prediction = trainer.predict(encoded["validation"])
predicted = prediction.predictions.argmax(axis=-1)
after = metrics.accuracy_f1(predicted, prediction.label_ids)
matrix = metrics.confusion(predicted, prediction.label_ids)
plots.confusion_matrix(matrix, label_names, title="Fine-tuned, validation");
print(f"validation after fine-tuning: accuracy {after['accuracy']:.3f}, F1 {after['f1']:.3f}")

# %% [markdown]
# ## Before and after

# %%
scores = pd.DataFrame({"majority class": majority, "untrained head": baseline, "fine-tuned": after}).T
display(scores[["accuracy", "f1"]].round(3))
plots.before_after(
    {"majority": {"accuracy": majority["accuracy"], "f1": majority["f1"]},
     "before": {"accuracy": baseline["accuracy"], "f1": baseline["f1"]},
     "after": after},
    title="Full fine-tuning",
);

# %% [markdown]
# Save the model and its tokenizer together (safetensors), so `pipeline` can load them in notebook 04,
# and record the numbers.

# %%
classifier_dir = profile.outputs() / "classifier"
trainer.save_model(str(classifier_dir))  # model weights (model.safetensors) + config
tokenizer.save_pretrained(str(classifier_dir))
results.record("02_full_finetune_trainer", "classifier", {
    "before": {"accuracy": baseline["accuracy"], "f1": baseline["f1"]},
    "after": after,
    "train_seconds": round(full_cost["seconds"], 2),
    "train_samples_per_second": train_output.metrics["train_samples_per_second"],
    "peak_memory_bytes": int(full_cost["peak_memory_bytes"]),
    "training_state_bytes": full_state,
    "trainable_params": full_trainable,
    "model_dir": display_path(classifier_dir),
})
print("saved to", display_path(classifier_dir), ":", sorted(p.name for p in classifier_dir.iterdir()))

# %% [markdown]
# ### A model card, and sharing on the Hub
# On the Hugging Face Hub a model is a folder like this one plus a `README.md`, the **model card**: a YAML
# header the Hub reads (licence, base model, task, evaluation results) and a few lines for people. We write
# one beside the weights (offline, with `huggingface_hub`). To share the model, log in once *in a terminal*
# (`hf auth login`; a token typed into a cell ends up in the saved notebook), then:
# ```python
# model.push_to_hub("your-name/paraphrase-classifier")      # weights, config and the card
# tokenizer.push_to_hub("your-name/paraphrase-classifier")
# ```

# %%
# the card, and a folder that loads anywhere: no file in it names this machine's paths
card = make_portable(
    classifier_dir, profile.clf_model, title="Paraphrase classifier (full fine-tune)",
    summary="Says whether sentence 2 paraphrases sentence 1; every weight fine-tuned with `Trainer`.",
    task="text-classification", dataset=profile.clf_data,
    scores={"accuracy": after["accuracy"], "f1": after["f1"]}, made_by=f"notebook 02, profile `{profile.name}`",
)
print(card.data.to_yaml())

# %% [markdown]
# ## The same model with LoRA
# Full fine-tuning updates every one of the model's weights and keeps optimizer state for each. LoRA
# freezes them and learns, next to chosen weight matrices, a low-rank update `B @ A` (rank `r`):
# a few hundred thousand numbers instead of tens of millions. The new classification head is still
# trained in full (`modules_to_save`), since it starts random.
#
# * `target_modules`: which weight matrices get an adapter. The names are BERT's: `query`, `key`,
#   `value` are the attention projections, and `dense` matches every other linear layer (attention
#   output, the feed-forward layers, the pooler). The original LoRA paper adapted only `query` and
#   `value`; the QLoRA paper found that adapting *every* linear layer is what matches full
#   fine-tuning. We do the latter: in our 3-epoch smoke runs (`docs/benchmarks.md`), query+value alone
#   stayed at the majority class's accuracy at each of the three learning rates we tried (exercise 3
#   compares the choices);
# * `r` and `lora_alpha`: the rank and the scale of the update (`alpha / r` multiplies it);
# * `lora_dropout`: dropout on the LoRA path, a little regularisation. Our profiles set it to 0: these
#   runs are short and keep the best evaluation anyway, and on a CPU the dropout costs training time, because
#   every adapted layer copies its input to drop parts of it (measured in [docs/benchmarks.md](../docs/benchmarks.md)).
#
# With so few trainable weights, each one has to move further: LoRA usually wants a **higher learning
# rate** (here 10x the full fine-tuning rate; `dataclasses.replace` copies the profile with that one field
# changed). Same recipe otherwise.

# %% tags=["export"]
# export
from peft import LoraConfig, TaskType


def classifier_lora_config(profile):
    """LoRA on every linear layer of a BERT-style encoder; the new head trains in full."""
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=["query", "key", "value", "dense"],
        modules_to_save=["classifier"],
    )

# %%
lora_config = classifier_lora_config(profile)
lora_model = get_peft_model(classification_model(profile.clf_model, label_names, SEED), lora_config)
lora_model.print_trainable_parameters()
lora_trainable = sum(p.numel() for p in lora_model.parameters() if p.requires_grad)

# %%
# the same recipe, with the profile's learning rate 10x larger (the one change LoRA needs)
lora_profile = dataclasses.replace(profile, clf_learning_rate=10 * profile.clf_learning_rate)
lora_args = classifier_training_args(lora_profile, profile.outputs() / "checkpoints" / "02-lora")
lora_trainer = Trainer(
    model=lora_model,
    args=lora_args,
    train_dataset=encoded["train"],
    eval_dataset=encoded["validation"],
    processing_class=tokenizer,
    data_collator=collator,
    compute_metrics=compute_metrics,
)
# on a CPU about as long as full fine-tuning: the gradients still flow back through every frozen layer,
# LoRA only saves computing and applying the weights' own gradients
estimates.announce("LoRA fine-tuning", estimates.classifier_train_seconds(profile, n_train, profile.clf_epochs))
with metrics.measure(profile.device) as lora_cost:
    lora_output = lora_trainer.train()
lora_state = metrics.training_state_bytes(lora_model, lora_trainer.optimizer)
lora_eval = lora_trainer.evaluate()
lora_after = {"accuracy": lora_eval["eval_accuracy"], "f1": lora_eval["eval_f1"]}
plots.training_curve(lora_trainer.state.log_history, metric="eval_accuracy", title="LoRA fine-tuning");

# %% [markdown]
# ## Full fine-tuning vs LoRA
# What LoRA saves is the memory that grows with the number of **trainable** weights: a gradient for each
# (in the weight's dtype) and the optimizer's state (AdamW keeps two fp32 moments per trainable weight).
# The table reads both off each run's model and optimizer (`metrics.training_state_bytes`). What LoRA does
# not save: the frozen weights are still loaded (its "weights" row is the base model plus the adapter),
# and the activations, which grow with batch size and sequence length, are not counted in these rows.
#
# The last memory row is measured on the whole process, and it includes what earlier cells loaded: while
# LoRA trains, the fully fine-tuned model and its optimizer state are still in memory. So it cannot show
# LoRA's saving, and the two columns of that row are not a comparison of the two methods.

# %%
def mib(n_bytes):
    return f"{n_bytes / 2**20:,.1f} MiB"


def comparison_column(trainable, cost, output, state, scores):
    return {"trainable parameters": f"{trainable:,}", "share of the model": f"{trainable / full_trainable:.2%}",
            "wall time (s)": round(cost["seconds"]), "samples / s": round(output.metrics["train_samples_per_second"], 1),
            "weights": mib(state["weights"]), "gradients (trainable weights)": mib(state["gradients"]),
            "optimizer state (AdamW)": mib(state["optimizer_state"]),
            MEMORY_LABEL: metrics.gib(cost["peak_memory_bytes"]),
            "accuracy": round(scores["accuracy"], 3), "F1": round(scores["f1"], 3)}


comparison = pd.DataFrame({"full": comparison_column(full_trainable, full_cost, train_output, full_state, after),
                           "LoRA": comparison_column(lora_trainable, lora_cost, lora_output, lora_state, lora_after)})
display(comparison)
full_extra = full_state["gradients"] + full_state["optimizer_state"]
lora_extra = lora_state["gradients"] + lora_state["optimizer_state"]
print(f"gradients + optimizer state: {mib(full_extra)} for full fine-tuning, {mib(lora_extra)} for LoRA "
      f"({full_extra / lora_extra:.0f}x less; LoRA trains {full_trainable / lora_trainable:.0f}x fewer parameters)")

# %% [markdown]
# The adapter is a few MB: it is saved alone, and notebook 04 loads it on top of the base model.

# %%
lora_dir = profile.outputs() / "classifier-lora"
lora_model.save_pretrained(str(lora_dir))  # adapter_model.safetensors + adapter_config.json
tokenizer.save_pretrained(str(lora_dir))
# adapter_config.json names the base by its hub id (not this machine's folder), and a card goes beside it
make_portable(lora_dir, profile.clf_model, title="Paraphrase classifier (LoRA adapter)", library="peft",
              summary="A LoRA adapter (and the trained classification head) for sentence-pair paraphrase detection.",
              task="text-classification", dataset=profile.clf_data, made_by=f"notebook 02, profile `{profile.name}`",
              scores={"accuracy": lora_after["accuracy"], "f1": lora_after["f1"]})
results.record("02_full_finetune_trainer", "lora", {
    "before": {"accuracy": baseline["accuracy"], "f1": baseline["f1"]},
    "after": lora_after,
    "train_seconds": round(lora_cost["seconds"], 2),
    "train_samples_per_second": lora_output.metrics["train_samples_per_second"],
    "peak_memory_bytes": int(lora_cost["peak_memory_bytes"]),
    "training_state_bytes": lora_state,
    "trainable_params": lora_trainable,
    "model_dir": display_path(lora_dir),
})
print("saved to", display_path(lora_dir), ":", sorted(p.name for p in lora_dir.iterdir()))

# %% [markdown]
# ## Self-check

# %%
assert after["accuracy"] > baseline["accuracy"] + 0.02, (
    f"fine-tuning did not beat the untrained model ({baseline['accuracy']:.3f} -> {after['accuracy']:.3f}): "
    "check the learning rate and that the labels line up with the texts"
)
assert after["accuracy"] >= majority["accuracy"], (
    f"the fine-tuned model ({after['accuracy']:.3f}) is no better than always answering the majority class ({majority['accuracy']:.3f})"
)
assert lora_trainable < 0.05 * full_trainable, "LoRA should train only a few percent of the weights"
assert lora_extra < 0.05 * full_extra, "LoRA's gradients and optimizer state should be a few percent of full fine-tuning's"
assert (classifier_dir / "model.safetensors").is_file() and (lora_dir / "adapter_model.safetensors").is_file()
print(f"✅ fine-tuning raised accuracy from {baseline['accuracy']:.2f} to {after['accuracy']:.2f} "
      f"(majority class: {majority['accuracy']:.2f}); LoRA reached {lora_after['accuracy']:.2f} training "
      f"{lora_trainable / full_trainable:.1%} of the weights.")

# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells (click the "..." to open one). They train for a handful of
# steps on a slice of the data, so they run in seconds; make them longer when you try for real.
#
# **1 (easy) · Predict the curve.** Before running anything, sketch the training-loss curve you expect
# with a learning rate 100x smaller than ours, and with one 20x larger. Then train each for a few steps
# and plot both. Which one barely moves, and which one jumps around (or gets stuck predicting one class)?

# %% tags=["solution"]
small = encoded["train"].shuffle(seed=SEED).select(range(min(96, len(encoded["train"]))))
probe_pairs = encoded["validation"].select(range(min(64, len(encoded["validation"]))))
for factor in (0.01, 20):
    transformers.set_seed(SEED)
    lr_model = AutoModelForSequenceClassification.from_pretrained(profile.clf_model, num_labels=2)
    lr_trainer = Trainer(
        model=lr_model,
        args=TrainingArguments(
            output_dir=str(profile.outputs() / "checkpoints" / "02-exercise-lr"),
            max_steps=6, learning_rate=factor * profile.clf_learning_rate,
            per_device_train_batch_size=16, logging_steps=1, save_strategy="no",
            use_cpu=profile.use_cpu, bf16=profile.bf16, fp16=profile.fp16, seed=SEED, report_to="tensorboard",
        ),
        train_dataset=small, processing_class=tokenizer, data_collator=collator,
    )
    lr_trainer.train()
    losses = [round(h["loss"], 3) for h in lr_trainer.state.log_history if "loss" in h]
    calls = lr_trainer.predict(probe_pairs).predictions.argmax(-1).mean()
    print(f"lr x{factor:g}: losses {losses}; calls {calls:.0%} of {len(probe_pairs)} validation pairs 'paraphrase'")
    plots.training_curve(lr_trainer.state.log_history, title=f"learning rate x{factor:g}")
# What to look for: if the small rate's losses stay near ln(2) = 0.69, its weights barely moved. If
# the large rate's losses jump up and down and it calls (almost) 0% or 100% of the pairs 'paraphrase',
# it has collapsed to one class; with more steps it may never recover.

# %% [markdown]
# **2 (medium) · One sentence instead of two.** Sentiment analysis classifies single sentences. Build a
# tiny dataset of reviews (text + label), tokenize it with one text argument instead of two, and
# fine-tune for a few steps. What in the recipe had to change? (Answer: only the tokenize function and
# the label names; `Trainer`, the collator and the arguments stay the same.)

# %% tags=["solution"]
reviews = Dataset.from_dict({
    "text": ["a wonderful, warm film", "terrible acting and a silly plot", "I loved every minute",
             "a bore from start to end", "superb cast, superb story", "tedious and stupid",
             "funny, moving and beautifully shot", "the worst film this year"],
    "label": [1, 0, 1, 0, 1, 0, 1, 0],
})
reviews_encoded = reviews.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"])
transformers.set_seed(SEED)
sentiment_model = AutoModelForSequenceClassification.from_pretrained(
    profile.clf_model, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
)
Trainer(
    model=sentiment_model,
    args=TrainingArguments(output_dir=str(profile.outputs() / "checkpoints" / "02-exercise-sentiment"), max_steps=8,
                           learning_rate=1e-4, per_device_train_batch_size=8, save_strategy="no", logging_steps=4,
                           use_cpu=profile.use_cpu, bf16=profile.bf16, fp16=profile.fp16, seed=SEED, report_to="tensorboard"),
    train_dataset=reviews_encoded, processing_class=tokenizer, data_collator=collator,
).train()
probe = tokenizer(["what a lovely story", "a dull and clumsy mess"], padding=True, return_tensors="pt").to(sentiment_model.device)
print([sentiment_model.config.id2label[i] for i in sentiment_model(**probe).logits.argmax(-1).tolist()])

# %% [markdown]
# **3 (hard) · Where should LoRA go?** Our adapter sits on every linear layer. The original LoRA paper
# used only `"query"` and `"value"`. Predict first: with about a fifth of the adapter's parameters, will
# query+value learn as fast? Train `["query", "value"]`, `["query", "key", "value"]` and ours for the same
# few steps at the LoRA learning rate and compare trainable parameters, training loss and validation
# accuracy (next to the majority class's). When would the smaller adapter be the better choice?

# %% tags=["solution"]
for targets in (["query", "value"], ["query", "key", "value"], lora_config.target_modules):
    transformers.set_seed(SEED)
    candidate = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(profile.clf_model, num_labels=2),
        LoraConfig(task_type=TaskType.SEQ_CLS, r=profile.lora_r, lora_alpha=profile.lora_alpha,
                   lora_dropout=profile.lora_dropout, target_modules=targets, modules_to_save=["classifier"]),
    )
    n = sum(p.numel() for p in candidate.parameters() if p.requires_grad)
    target_trainer = Trainer(
        model=candidate,
        args=TrainingArguments(output_dir=str(profile.outputs() / "checkpoints" / "02-exercise-targets"), max_steps=10,
                               learning_rate=10 * profile.clf_learning_rate, per_device_train_batch_size=16,
                               save_strategy="no", logging_steps=2, use_cpu=profile.use_cpu, bf16=profile.bf16,
                               fp16=profile.fp16, seed=SEED, report_to="tensorboard"),
        train_dataset=small, eval_dataset=encoded["validation"], processing_class=tokenizer, data_collator=collator,
        compute_metrics=compute_metrics,
    )
    run = target_trainer.train()
    accuracy = target_trainer.evaluate()["eval_accuracy"]
    print(f"{'+'.join(targets):>24}: {n:>9,} trainable ({n / full_trainable:.2%}), train loss {run.training_loss:.3f}, "
          f"validation accuracy {accuracy:.3f} (majority class {majority['accuracy']:.3f})")
# Reading the numbers: query+value has about a fifth of our adapter's parameters. If its loss ends
# higher and its accuracy sits at the majority class's, it has not yet learned anything beyond "always
# say the frequent label": fewer matrices can move, and the feed-forward layers, which hold much of what
# the model knows, stay frozen. Ten steps are short for all three, so compare them with each other, and
# make the runs longer before concluding. The smaller adapter is the better choice when memory for
# optimizer state or adapter size is what limits you (many adapters served beside one base model), or
# with long runs where it catches up.
