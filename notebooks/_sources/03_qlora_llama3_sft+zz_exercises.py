# %% [markdown]
# ## Exercises
# Solutions are in the collapsed cells below each exercise (click the "..." to open one). Try first.
#
# **1 (easy) · What does `max_length` cost?** Before running anything, predict how many training
# examples a `max_length` of 64 tokens would cut, and what that does to the EOS at the end of their
# answers. Then check with `truncation_report`.

# %% tags=["solution"]
short = truncation_report(tokenizer, train_conversations, 64)
print(f"max_length 64 would cut {short['truncated']} of {short['examples']} examples ({short['share']:.0%}).")
# Every cut example loses the end of its answer, and with it the EOS token that teaches the model to
# stop: train on many cut examples and the model rambles until max_new_tokens.

# %% [markdown]
# **2 (medium) · Greedy or sampled?** Ask the fine-tuned model one held-out question three times with
# sampling (`do_sample=True, temperature=0.8, top_p=0.95`) and once greedily. Which answers differ, and
# why do we grade with greedy decoding?

# %% tags=["solution"]
question_ids = tokenizer.apply_chat_template(
    [{"role": "user", "content": questions[0]}], add_generation_prompt=True, return_tensors="pt", return_dict=True
).to(model.device)
prompt_len = question_ids["input_ids"].shape[1]
model.eval()
with torch.no_grad():
    runs = [("greedy", dict(do_sample=False))] + [(f"sample {i}", dict(do_sample=True, temperature=0.8, top_p=0.95)) for i in (1, 2, 3)]
    for seed, (label, kwargs) in enumerate(runs):
        torch.manual_seed(seed)  # a different seed for each sampled answer, the same ones on every run
        out = model.generate(**question_ids, max_new_tokens=16, pad_token_id=tokenizer.pad_token_id, **kwargs)
        print(f"{label:>8}: {tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)[:100]!r}")
# Greedy decoding always gives the same answer for the same prompt, so before/after scores compare the
# models and not the luck of the draw. Sampling is for variety in a live chat, not for grading.

# %% [markdown]
# **3 (hard) · Loss on everything.** Build the collated batch again with `completion_only_loss=False`
# and compare the share of tokens that carry loss with the run above. What would the model learn from
# the extra tokens, and why is that a waste of the adapter's capacity?

# %% tags=["solution"]
everything_config = SFTConfig(
    output_dir=str(profile.outputs() / "sft-exercise"),
    max_length=MAX_LENGTH,
    completion_only_loss=False,
    use_cpu=profile.device == "cpu",
    report_to="tensorboard",
)
everything = SFTTrainer(model=model, args=everything_config, train_dataset=train_conversations.select(range(4)),
                        processing_class=tokenizer)
everything_batch = everything.data_collator([everything.train_dataset[i] for i in range(4)])
real_tokens = everything_batch["attention_mask"].sum().item()
everything_share = (everything_batch["labels"] != -100).sum().item() / real_tokens
print(f"share of real tokens that carry loss: completion only {checked['loss_share']:.0%}, everything {everything_share:.0%}")
assert everything_share > checked["loss_share"]
# With loss on everything, most of the gradient goes to predicting the system prompt and the question,
# text the model is *given* at inference time. The adapter spends its capacity memorising prompts.
