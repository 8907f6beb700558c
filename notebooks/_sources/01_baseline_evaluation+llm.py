# %% [markdown]
# ## The chat model's baseline
#
# The LLM track (notebook 03) fine-tunes a chat model to explain medical terms in plain language. Its
# starting point is measured here, the same way 03 measures it: greedy answers to the **held-out**
# questions, scored with **ROUGE-L** (the longest run of words shared with a reference answer, 0 to 1)
# and the share of answers that **stop with EOS** before the length limit. Offline, the model is the tiny
# stand-in with random weights, so expect a score near zero: that is the floor fine-tuning must lift.

# %%
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workshop_utils import estimates
from workshop_utils.data import load_instruction_task
from workshop_utils.results import Results
from workshop_utils.sft import SYSTEM_PROMPT, ensure_distinct_pad, generate_answers, score_answers, threads_for

llm_data = load_instruction_task(profile)
llm_questions = list(llm_data["test"]["instruction"])
llm_references = list(llm_data["test"]["response"])

llm_tokenizer = AutoTokenizer.from_pretrained(profile.llm_model)
llm_model = AutoModelForCausalLM.from_pretrained(
    profile.llm_model,  # on a GPU: the 4-bit Llama 3 8B Instruct
    dtype=torch.float32 if profile.device == "cpu" else "auto",
    device_map="auto" if profile.device == "cuda" else None,
)
print(ensure_distinct_pad(llm_tokenizer, llm_model))

# %%
estimates.announce(f"answering {len(llm_questions)} held-out questions",
                   estimates.generation_seconds(profile, len(llm_questions)))
with threads_for(profile.llm_model):  # one CPU thread for the tiny offline model: faster, see its docstring
    llm_answers = generate_answers(llm_model, llm_tokenizer, llm_questions, max_new_tokens=profile.max_new_tokens,
                                   system_prompt=SYSTEM_PROMPT, desc="base model")
llm_baseline = score_answers(llm_answers, llm_references)
Results.for_profile(profile).record("01_baseline_evaluation", "llm", llm_baseline)
print(f"Q: {llm_questions[0]}\nreference: {llm_references[0]}\nbase model: {llm_answers[0].shown()[:200]}\n")
print(f"base chat model on {len(llm_questions)} held-out questions: ROUGE-L {llm_baseline['rougeL']:.3f}, "
      f"{llm_baseline['eos_rate']:.0%} of answers end with EOS")

# %%
assert 0.0 <= llm_baseline["rougeL"] <= 1.0 and 0.0 <= llm_baseline["eos_rate"] <= 1.0
del llm_model  # free the memory for the rest of the notebook
