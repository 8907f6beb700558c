# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · What β does to the margin.** From the log-probabilities kept before training
# (`reference_logprobs`) and measured after (`after_logprobs`), compute the held-out reward margins with
# β = 0.1 and with β = 0.5 using `preference_metrics`. Predict first: which of the two numbers changes,
# accuracy or margin, and by how much?

# %% tags=["solution"]
for beta in (0.1, 0.5):
    m = preference_metrics(after_logprobs, reference_logprobs, beta)
    print(f"beta {beta}: preference accuracy {m['preference_accuracy']:.0%}, mean reward margin {m['reward_margin']:+.3f}")
# The margin is beta times a log-probability difference, so it scales with beta (5x here), and its sign,
# hence the accuracy, does not change. beta matters during *training*: in the loss -log sigmoid(margin),
# a larger beta saturates the sigmoid after a smaller change, so the policy stops moving sooner and stays
# closer to the reference.

# %% [markdown]
# **2 (medium) · Up or down?** A positive margin can come from the chosen answers becoming more likely,
# from the rejected ones becoming less likely, or both. Average, over the held-out pairs, the change of
# the log-probability of the chosen and of the rejected answers (after minus before). Which one moved
# more? What does that say about the NLL row of the table?

# %% tags=["solution"]
def mean_change(key):
    changes = [a - b for (a, _), (b, _) in zip(after_logprobs[key], reference_logprobs[key])]
    return sum(changes) / len(changes)


chosen_change, rejected_change = mean_change("chosen"), mean_change("rejected")
print(f"log-probability of an answer, mean change: chosen {chosen_change:+.3f}, rejected {rejected_change:+.3f}")
# the mean margin is beta * (chosen change - rejected change), positive after training (the self-check)
assert abs(BETA * (chosen_change - rejected_change) - after["reward_margin"]) < 1e-6
# DPO only constrains the difference: the printed changes say which side moved. If the rejected answers
# fell much more than the chosen ones rose, it is because the loss is satisfied either way; TRL's
# loss_type=["sigmoid", "sft"] adds a term that keeps the chosen answers likely.

# %% [markdown]
# **3 (hard) · A different pair set.** Build held-out pairs whose chosen answer is the MedQuAD reference and
# whose rejected answer is the reference of *another* held-out question (an off-topic answer), and compute
# the preference accuracy of the trained policy against the reference model on them. The reference is the
# adapter TRL called `ref`: switch to it with `trainer.model.set_adapter("ref")` (and back to
# `"default"`). Did DPO on our pairs teach anything about answering the question asked?

# %% tags=["solution"]
rotated = [make_pair(q, ref, other, "test")
           for q, ref, other in zip(questions, references, references[1:] + references[:1])]
trainer.model.set_adapter("ref")
reference_rotated = pair_logprobs(trainer.model, tokenizer, rotated, desc="reference, off-topic pairs")
trainer.model.set_adapter("default")
policy_rotated = pair_logprobs(trainer.model, tokenizer, rotated, desc="policy, off-topic pairs")
off_topic = preference_metrics(policy_rotated, reference_rotated, BETA)
per_token = sum(c / nc > r / nr for (c, nc), (r, nr) in zip(reference_rotated["chosen"], reference_rotated["rejected"]))
print(f"off-topic pairs: preference accuracy {off_topic['preference_accuracy']:.0%}, mean reward margin "
      f"{off_topic['reward_margin']:+.3f}; the reference model finds the right answer more likely per token in "
      f"{per_token} of {len(rotated)} pairs")
# The implicit reward measures what training *changed*, not what the model knew: our pairs never contrasted
# a right answer with an off-topic one, so a margin near 0 here is expected. The per-token count says how
# often the model already prefers the right answer; training on such pairs would teach "answer the question
# asked", which the count shows how much this model already knows.
