# %% [markdown]
# # 01 · Measure before you fine-tune
#
# Fine-tuning is an experiment, and an experiment needs a control. Before we train anything we ask:
# **how good is the model we start from, and how good is a rule that needs no model at all?**
#
# * The **majority-class baseline** always predicts the most frequent label. On a task where two
#   thirds of the pairs are paraphrases, it scores about 0.67 accuracy without reading a word. A
#   fine-tuned model that reaches 0.70 has learned very little; without this number you would not know.
# * The **pretrained encoder with a fresh classification head** is exactly what notebook 02 starts
#   training from. Measuring it now gives the "before" of the before/after comparison.
#
# The numbers go into the results record (`outputs/<profile>/results.json`) so notebook 02 can put
# them next to the fine-tuned scores.

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %% [markdown]
# The profile is applied *before* the Hugging Face libraries are imported, so offline mode is in
# place when they start. Now the imports, and a seed: the classification head is initialised at
# random, and `set_seed` makes that "random" the same every time you run the notebook.

# %%
import csv

import numpy as np
import pandas as pd
import torch
import transformers
from datasets import load_dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForSequenceClassification as _AutoClf,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from workshop_utils import estimates, metrics, plots
from workshop_utils.answer_cache import use_cache
from workshop_utils.answers import score_chat_model
from workshop_utils.data import (
    check_classification_dataset,
    classification_file_errors,
    describe,
    load_instruction_task,
)
from workshop_utils.results import Results

SEED = 42
transformers.set_seed(SEED)
results = Results.for_profile(profile)
use_cache(profile.outputs() / "answer-cache")  # reuse answers this model already gave to the same prompts (01 says how)

# %% [markdown]
# ## The task: is sentence 2 a paraphrase of sentence 1?
# With a GPU and the Hub this is **GLUE MRPC** (Microsoft Research Paraphrase Corpus: news sentence
# pairs labelled by people). Offline it is `data/paraphrase`, a dataset of the same shape shipped with
# the workshop. Label 1 means "paraphrase", 0 means "not a paraphrase".
#
# 🤗 Datasets' `load_dataset` reads either: a Hub id and configuration, or local files. `data/paraphrase` is
# GLUE-style TSV (tab-separated, no quoting: a quote character is text), so we say so. The next line,
# `check_classification_dataset`, checks every row (a bad one is a one-line error naming file, row and column),
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
print("text columns:", text_columns)
clf_data["train"].to_pandas().head(5)

# %% [markdown]
# Look at the label balance: it decides what the trivial baseline scores.

# %%
for split in ("train", "validation"):
    labels = np.array(clf_data[split]["label"])
    counts = np.bincount(labels, minlength=2)
    print(f"{split:>10}: " + ", ".join(f"{label_names[i]} {c} ({c / len(labels):.0%})" for i, c in enumerate(counts)))

# %% [markdown]
# ## Baseline 1: always predict the majority class
# The most frequent label in the **training** split (never peek at the validation labels to choose it),
# predicted for every validation pair. Its F1 is high because F1 here is measured on the positive
# class and the majority class *is* the positive class: this is why we always report accuracy and F1
# together, and always next to this baseline.

# %%
majority = metrics.majority_baseline(clf_data["train"]["label"], clf_data["validation"]["label"])
print(f"majority class = {label_names[majority['predicts']]}: accuracy {majority['accuracy']:.3f}, F1 {majority['f1']:.3f}")

# %% [markdown]
# ## Baseline 2: a pretrained encoder with a new, untrained head
# `AutoModelForSequenceClassification` loads the pretrained encoder (`bert-base-uncased` on GPU,
# MiniLM-L6 on CPU/offline) and puts a **new linear layer** on top that maps the sentence-pair
# representation to 2 scores. That layer's weights are random. Transformers warns that some weights
# are "newly initialized": here that is expected, not an error.
#
# `id2label`/`label2id` store readable label names in the model's config, so a pipeline later prints
# `paraphrase` instead of `LABEL_1`.

# %%
tokenizer = AutoTokenizer.from_pretrained(profile.clf_model)
model = AutoModelForSequenceClassification.from_pretrained(
    profile.clf_model,
    num_labels=2,
    id2label={0: "not_paraphrase", 1: "paraphrase"},
    label2id={"not_paraphrase": 0, "paraphrase": 1},
)
model.to(profile.device)
print(f"{model.config.model_type}: {model.num_parameters():,} parameters; "
      f"the new head: {sum(p.numel() for p in model.classifier.parameters()):,} of them")

# %% [markdown]
# ### Evaluating, one batch at a time
# Sentence pairs are tokenized **together** (`tokenizer(sentence1, sentence2)`): the model sees
# `[CLS] sentence 1 [SEP] sentence 2 [SEP]` and can attend across the pair. We truncate to
# `max_length` tokens and let `DataCollatorWithPadding` pad each batch only to its longest pair
# (notebook 02 explains why). The loop is plain PyTorch: no gradients, argmax of the two scores.

# %%
def tokenize(batch):
    return tokenizer(*[batch[c] for c in text_columns], truncation=True, max_length=profile.clf_max_length)


encoded_validation = clf_data["validation"].map(tokenize, batched=True, remove_columns=text_columns)
collator = DataCollatorWithPadding(tokenizer)


def evaluate_head(model, dataset, batch_size=32):
    """Predictions and accuracy/F1 of a classifier on a tokenized dataset."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    predictions = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluating"):
            batch = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
            predictions += model(**batch).logits.argmax(dim=-1).tolist()
    return predictions, metrics.accuracy_f1(predictions, dataset["label"])


estimates.announce(f"evaluating {len(encoded_validation)} pairs", estimates.classifier_eval_seconds(profile, len(encoded_validation)))
predictions, untrained = evaluate_head(model, encoded_validation)
share_positive = float(np.mean(predictions))
print(f"untrained head: accuracy {untrained['accuracy']:.3f}, F1 {untrained['f1']:.3f}; "
      f"it calls {share_positive:.0%} of the pairs 'paraphrase'")

# %% [markdown]
# ## Record and compare

# %%
results.record("01_baseline_evaluation", "majority", {"accuracy": majority["accuracy"], "f1": majority["f1"]})
results.record("01_baseline_evaluation", "classifier", {"accuracy": untrained["accuracy"], "f1": untrained["f1"]})

display(pd.DataFrame({"majority class": majority, "encoder + untrained head": untrained}).T[["accuracy", "f1"]].round(3))
plots.before_after(
    {"majority class": {"accuracy": majority["accuracy"], "f1": majority["f1"]},
     "untrained head": {"accuracy": untrained["accuracy"], "f1": untrained["f1"]}},
    title="Before any fine-tuning",
);

# %% [markdown]
# ## Why is the untrained model no better than chance?
# The encoder *does* know a lot about language: it was pretrained on billions of words. But the head
# that turns its 768 (BERT) or 384 (MiniLM) numbers into "paraphrase / not" is random, so its decision
# has nothing to do with the question. In practice a random head tends to prefer one of the two
# classes for almost every input, and then scores about the share of that class: near the majority
# baseline if it happens to prefer "paraphrase", far below it otherwise. Change `SEED` and re-run to
# see it flip. Fine-tuning (notebook 02) trains the head, and gently adjusts the encoder, on labelled
# pairs.

# %% [markdown]
# ## Self-check

# %%
assert 0.5 <= majority["accuracy"] <= 0.8, f"majority-class accuracy {majority['accuracy']:.3f} is outside 0.5-0.8: is the data loaded right?"
assert len(predictions) == len(clf_data["validation"]), "one prediction per validation pair"
minority_share = 1 - majority["accuracy"]
assert minority_share - 0.1 <= untrained["accuracy"] <= majority["accuracy"] + 0.1, (
    f"an untrained head should score near chance, between {minority_share - 0.1:.2f} and "
    f"{majority['accuracy'] + 0.1:.2f}, got {untrained['accuracy']:.3f}: was the model trained already?"
)
assert results.get("01_baseline_evaluation", "majority") is not None
print(f"✅ baselines recorded: majority class {majority['accuracy']:.2f} accuracy, untrained head "
      f"{untrained['accuracy']:.2f}. Notebook 02 has to beat {max(majority['accuracy'], untrained['accuracy']):.2f}.")
