# %% [markdown]
# ## The chat model's baseline
#
# The LLM track (notebook 03) fine-tunes a chat model to answer health questions (MedQuAD). Its starting
# point is measured here, the same way 03 measures it, on the **held-out** questions, whose topics
# (diseases, genes, drugs) never appear in training:
#
# * the **NLL** of the reference answers: the mean negative log-likelihood per token when the model reads
#   the question and the reference answer (lower is better; no generation, so it is cheap and steady);
# * greedy answers (with notebook 03's light repetition penalty) scored with **ROUGE-L** (the longest run of words shared with the reference, 0 to 1),
#   the share of answers that **stop with EOS** before the length limit, and the share that **loop**.
#
# Without a GPU the model is SmolLM2-135M-Instruct, a real pretrained chat model of the Llama family
# (notebook 00 says why it stands in for Llama 3 8B). It writes fluent English, so expect a real score,
# not zero: that is the bar fine-tuning must clear.
#
# Scoring is the slow part of every LLM notebook, and the series asks the same model the same questions
# more than once (03's "before" *is* this baseline; 04 scores 03's models again). Greedy answers and
# teacher-forced NLLs are deterministic, so the notebooks keep them: `use_cache(...)` in the set-up cell
# stores each result in `outputs/<profile>/answer-cache/` under a key made of a fingerprint of what the
# model computes (its logits on a fixed probe: a trained adapter changes it, a switched-off one does not),
# the prompts' token ids and the decoding. A later call with the same key prints `reused (...)` with the
# file's name instead of a progress bar; delete the folder to compute everything again.

# %%
llm_data = load_instruction_task(profile)
llm_questions = list(llm_data["test"]["instruction"])
llm_references = list(llm_data["test"]["response"])
n_answered = min(len(llm_questions), profile.llm_generate_rows or len(llm_questions))

llm_tokenizer = AutoTokenizer.from_pretrained(profile.llm_model)
llm_model = AutoModelForCausalLM.from_pretrained(
    profile.llm_model,  # on a GPU: the 4-bit Llama 3 8B Instruct
    dtype=torch.float32 if profile.device == "cpu" else "auto",
    device_map="auto" if profile.device == "cuda" else None,
)
if llm_tokenizer.pad_token is None:  # Llama 3 ships without one; padding a batch of prompts needs one
    llm_tokenizer.pad_token = llm_tokenizer.eos_token  # masked out when generating; notebook 03 says why training needs another

# %%
estimates.announce(f"scoring {len(llm_questions)} reference answers and answering {n_answered} questions",
                   estimates.nll_seconds(profile, len(llm_questions)) + estimates.generation_seconds(profile, n_answered))
llm_baseline = score_chat_model(llm_model, llm_tokenizer, llm_questions, llm_references, max_new_tokens=profile.max_new_tokens,
                                repetition_penalty=profile.repetition_penalty, answered=n_answered, desc="base model")
llm_answers = llm_baseline.pop("answers")
Results.for_profile(profile).record("01_baseline_evaluation", "llm", llm_baseline)
print(f"Q: {llm_questions[0]}\nreference: {llm_references[0]}\nbase model: {llm_answers[0].shown()[:300]}\n")
print(f"base chat model on {len(llm_questions)} held-out questions: NLL {llm_baseline['nll']:.3f}; on {n_answered} answered "
      f"({llm_baseline['decoding']}): ROUGE-L {llm_baseline['rougeL']:.3f}, {llm_baseline['eos_rate']:.0%} stop by themselves, "
      f"{llm_baseline['repetition']:.0%} loop (the reference answers: {llm_baseline['references_looping']:.0%})")

# %%
assert 0.0 <= llm_baseline["rougeL"] <= 1.0 and 0.0 <= llm_baseline["eos_rate"] <= 1.0
assert 0.5 < llm_baseline["nll"] < 6.0, f"NLL {llm_baseline['nll']:.2f} is far from a pretrained chat model's: is the model loaded right?"
assert llm_baseline["rougeL"] > 0.05, "the pretrained chat model should already share some words with the references"
del llm_model  # free the memory for the rest of the notebook
