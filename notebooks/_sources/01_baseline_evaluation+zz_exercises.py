# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · How random is "random"?** Re-create the classifier with two other seeds and evaluate
# each on the validation pairs. Does the accuracy move? Does the share of pairs it calls "paraphrase"?
# Explain the pattern with what you know about the majority baseline.

# %% tags=["solution"]
exercise_rows = clf_data["validation"].select(range(min(64, len(clf_data["validation"]))))
exercise_encoded = exercise_rows.map(tokenize, batched=True, remove_columns=text_columns)
for seed in (1, 2):
    transformers.set_seed(seed)
    other = _AutoClf.from_pretrained(profile.clf_model, num_labels=2).to(profile.device)
    preds, scores = evaluate_head(other, exercise_encoded)
    print(f"seed {seed}: accuracy {scores['accuracy']:.3f}, calls {np.mean(preds):.0%} 'paraphrase'")
print(f"these {len(exercise_rows)} pairs: {np.mean(exercise_rows['label']):.0%} are paraphrases")
transformers.set_seed(SEED)
# Compare the lines: a head that calls (almost) every pair 'paraphrase' scores about the share of
# paraphrases printed last, one that calls (almost) none scores about the rest. If the share it calls
# 'paraphrase' swings with the seed, so does the accuracy: it measures the coin, not the model.

# %% [markdown]
# **2 (medium) · A baseline that reads.** Paraphrases share many words. Compute the word overlap
# (Jaccard: shared words / all words) of each pair, choose the threshold that maximises accuracy on the
# **training** split, and score it on validation. Is it harder to beat than the majority class?

# %% tags=["solution"]
def word_overlap(a, b):
    wa, wb = set(a.lower().split()), set(b.lower().split())
    return len(wa & wb) / max(1, len(wa | wb))


def overlaps(split):
    rows = clf_data[split]
    if len(text_columns) < 2:
        raise ValueError("word overlap needs a sentence pair")
    return np.array([word_overlap(a, b) for a, b in zip(rows[text_columns[0]], rows[text_columns[1]])])


train_overlap, train_labels = overlaps("train"), np.array(clf_data["train"]["label"])
candidates = np.linspace(0, 1, 101)
best = max(candidates, key=lambda t: np.mean((train_overlap >= t) == train_labels))
overlap_scores = metrics.accuracy_f1((overlaps("validation") >= best).astype(int), clf_data["validation"]["label"])
print(f"threshold {best:.2f}: accuracy {overlap_scores['accuracy']:.3f}, F1 {overlap_scores['f1']:.3f} "
      f"(majority class {majority['accuracy']:.3f})")
# Whether word overlap beats the majority class depends on how the non-paraphrases were made: when they
# differ from the first sentence by one swapped name, number or date, they share almost every word and
# overlap cannot tell them apart. A useful fine-tuned model has to beat the best of these baselines.

# %% [markdown]
# **3 (hard) · The encoder already knows something.** The head is random, but the encoder is not.
# Mean-pool the encoder's token vectors (`model.base_model`, ignoring padding) for each sentence
# separately, take the cosine similarity of the two sentences, and pick a threshold on (at most 256)
# training pairs as in exercise 2. What does this say about where the knowledge sits, and about what
# fine-tuning has to learn?

# %% tags=["solution"]
def sentence_vectors(sentences, batch_size=64):
    vectors = []
    encoder = model.base_model.eval()
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(sentences[start:start + batch_size], truncation=True, max_length=profile.clf_max_length,
                            padding=True, return_tensors="pt").to(model.device)
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vectors.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return torch.nn.functional.normalize(torch.cat(vectors), dim=-1)


def cosine(rows):
    return (sentence_vectors(rows[text_columns[0]]) * sentence_vectors(rows[text_columns[1]])).sum(-1).numpy()


few_train = clf_data["train"].select(range(min(256, len(clf_data["train"]))))
cos_train, cos_labels = cosine(few_train), np.array(few_train["label"])
threshold = max(np.linspace(-1, 1, 201), key=lambda t: np.mean((cos_train >= t) == cos_labels))
cos_scores = metrics.accuracy_f1((cosine(clf_data["validation"]) >= threshold).astype(int), clf_data["validation"]["label"])
print(f"cosine >= {threshold:.2f}: accuracy {cos_scores['accuracy']:.3f}, F1 {cos_scores['f1']:.3f} "
      f"vs untrained head {untrained['accuracy']:.3f} and majority class {majority['accuracy']:.3f}")
# If the cosine threshold beats the majority class, the pretrained representations already separate
# paraphrases from non-paraphrases better than the label counts do: the knowledge is in the encoder,
# the random head just cannot read it, and fine-tuning mostly teaches the head (and nudges the encoder)
# to use it. If it does not beat it, the untrained encoder's plain average is not enough on this data
# (for instance when a non-paraphrase differs from its first sentence by one swapped name or number, as
# in exercise 2), and telling such pairs apart needs what fine-tuning learns from the labels.
