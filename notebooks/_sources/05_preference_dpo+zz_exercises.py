# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · What β does to the margin.** From the log-probabilities kept before training
# (`reference_logprobs`) and measured after (`after["logprobs"]`), compute the held-out reward margins with
# β = 0.1 and with β = 0.5 using `preference_metrics`. Predict first: which of the two numbers changes,
# accuracy or margin, and by how much?

# %% tags=["solution"]
for beta in (0.1, 0.5):
    m = preference_metrics(after["logprobs"], reference_logprobs, beta)
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
    changes = [a - b for (a, _), (b, _) in zip(after["logprobs"][key], reference_logprobs[key])]
    return sum(changes) / len(changes)


chosen_change, rejected_change = mean_change("chosen"), mean_change("rejected")
print(f"log-probability of an answer, mean change: chosen {chosen_change:+.3f}, rejected {rejected_change:+.3f}")
# the mean margin is beta * (chosen change - rejected change), positive after training (the self-check)
assert abs(BETA * (chosen_change - rejected_change) - after["reward_margin"]) < 1e-6
# DPO only constrains the difference. Typically the rejected answers (the model's own habits) fall fast,
# and the chosen ones move little or even fall a bit: that is what the NLL row shows. TRL's
# loss_type=["sigmoid", "sft"] adds a term that keeps the chosen answers likely.

# %% [markdown]
# **3 (hard) · A different rejected answer.** Build held-out pairs whose rejected answer is the reference
# answer of *another* held-out question (an off-topic answer), and compute the preference accuracy of the
# trained policy against the reference on them. The reference is the adapter TRL called `ref`: switch to
# it with `trainer.model.set_adapter("ref")` (and back to `"default"`). Is this pair set easier or harder
# than ours, and what would training on it teach?

# %% tags=["solution"]
rotated = [make_pair(prompt_text(p), p["chosen"][0]["content"], q["chosen"][0]["content"], "test")
           for p, q in zip(test_pairs, test_pairs[1:] + test_pairs[:1])]
trainer.model.set_adapter("ref")
reference_rotated = pair_logprobs(trainer.model, tokenizer, rotated, desc="reference, off-topic pairs")
trainer.model.set_adapter("default")
policy_rotated = pair_logprobs(trainer.model, tokenizer, rotated, desc="policy, off-topic pairs")
off_topic = preference_metrics(policy_rotated, reference_rotated, BETA)
print(f"off-topic rejected answers: preference accuracy {off_topic['preference_accuracy']:.0%}, the policy prefers "
      f"the right answer per token in {off_topic['prefers_reference']:.0%} of the pairs")
# Per token, the model already finds the right reference more likely than another question's answer in
# most pairs, but not in all: MedQuAD's answers share one style, and a short generic answer can beat a
# long specific one. The implicit reward, though, hardly separates the two: our DPO run raised answers in
# the reference style, whichever question they answer, and never saw an off-topic rejected answer. The
# reward measures what training changed, not what the model knew before; training on such pairs would
# teach "answer the question asked", a lesson this model mostly knows already.
