# %% [markdown]
# # 05 · Teaching a chat model which answer people prefer: DPO with TRL
#
# Notebook 03 showed the model *what* to answer (supervised fine-tuning: imitate the reference). Chat
# assistants get one more stage: **preference tuning**. Instead of one right answer per question, the
# training signal is a **pair**: two answers to the same question, one *chosen* (preferred) and one
# *rejected*. The model should learn to make answers like the chosen one more likely than answers like
# the rejected one.
#
# **RLHF** (reinforcement learning from human feedback, as used for InstructGPT) does this in three
# moving parts: train a *reward model* on the pairs, then let the chat model *sample* answers, score them
# with the reward model and update it with PPO, while a penalty keeps it close to the SFT model.
#
# **DPO** (Direct Preference Optimization, Rafailov et al. 2023) shows that the same objective can be
# optimised without the reward model and without sampling. For each pair it compares how much more
# likely the model being trained (the **policy** π) finds each answer than a frozen copy of the SFT
# model (the **reference** π_ref) does:
#
# $$\text{reward}(y) = \beta \, \big(\log \pi(y \mid x) - \log \pi_\text{ref}(y \mid x)\big), \qquad
# \text{loss} = -\log \sigma\big(\text{reward}(y_\text{chosen}) - \text{reward}(y_\text{rejected})\big)$$
#
# That is a classification loss on pairs: push the **reward margin** (chosen minus rejected) up. The
# reward is *implicit*, measured against the reference, and **β** sets how much the policy may drift
# from it: a large β makes every small change in log-probability count, so the loss is satisfied
# with a small drift; a small β lets the policy move further.
#
# We measure, on questions about **topics no training pair touches**:
#
# * first, **the answers themselves**, scored by notebook 03's function (NLL of the reference answers,
#   ROUGE-L, stop rate, looping), under 03's decoding and under plain greedy decoding, the behaviour the
#   pairs are built to change;
# * then, as training diagnostics, the mean **reward margin** and **preference accuracy** (the share of
#   held-out pairs whose margin is positive) of the trained policy against the reference.
#
# This notebook starts from the adapter notebook 03 saved: **run 03 first** (same profile).

# %%
# The run profile: what this notebook will do on this machine, and why.
from workshop_utils.profiles import active_profile

profile = active_profile()
profile.show()

# %%
import pandas as pd
import torch
import transformers
from datasets import Dataset, load_dataset
from trl import DPOTrainer

from workshop_utils import demo, estimates, plots
from workshop_utils.answer_cache import use_cache
from workshop_utils.answers import side_by_side
from workshop_utils.cards import make_portable
from workshop_utils.data import check_instruction_dataset, instruction_file_errors
from workshop_utils.dpo import load_pairs, margin_curve, pair_logprobs, write_pairs
from workshop_utils.metrics import gib, measure
from workshop_utils.paths import display_path
from workshop_utils.results import Results
from workshop_utils.routes import use_torch_loss_on_cpu

adapter_dir = demo.require(profile.outputs() / "sft-adapter", "03_qlora_llama3_sft")
estimates.announce("this notebook", estimates.series_estimate(profile).per_notebook["05_preference_dpo"])

# %%
SEED = 42
transformers.set_seed(SEED)
use_cache(profile.outputs() / "answer-cache")  # reuse answers this model already gave to the same prompts (01 says how)
print(f"transformers {transformers.__version__}, torch {torch.__version__}")

# %% [markdown]
# ## The SFT model: policy and reference in one
#
# We load the base model the adapter names in its `adapter_config.json` and put notebook 03's adapter on
# it, **trainable** (`is_trainable=True`): DPO
# continues training that adapter. Where is the reference model? Nowhere yet: when `DPOTrainer`
# receives a peft model whose adapter is already trained and no `ref_model`, it copies the adapter
# under the name `ref`, freezes the copy, and computes the reference log-probabilities with `ref`
# switched on. The reference is exactly the SFT model, and it costs only a second small adapter, not a
# second copy of the model. (With a fresh adapter instead, TRL would use the model with adapters
# switched off as the reference.)
#
# On a GPU the base model loads in 4-bit, as in 03; on a CPU in float32 (03 measured why): the loading is
# 03's own `load_model`, imported from the recipe module that notebook's export cells became.
#
# Cells marked `# export` are the recipe itself: `workshop dpo` runs this same code (it is copied into
# `workshop_utils/recipes/preference_dpo.py` when the notebooks are built).

# %% tags=["export"]
# export
from peft import PeftConfig, PeftModel
from transformers import AutoTokenizer

from workshop_utils.cards import local_copy
from workshop_utils.recipes.qlora_llama3_sft import load_model
from workshop_utils.routes import SFTRoute


def sft_base_model(profile, adapter_dir):
    """What to load as the adapter's base here: the hub id it records, or offline the workshop's local copy."""
    return local_copy(PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path, offline=profile.offline)


def load_sft_model(profile, adapter_dir):
    """The base model with an SFT LoRA adapter on top, trainable, and the tokenizer saved with the adapter."""
    base_id = sft_base_model(profile, adapter_dir)  # the adapter records its base by hub id
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)  # saved by 03, pad token already distinct from EOS
    # loaded as notebook 03 loads it: 4-bit NF4 on a GPU (QLoRA), float32 on a CPU (03 measured why)
    route = SFTRoute("bnb" if profile.device == "cuda" else "dense", base_id, "the base of notebook 03's adapter")
    base, _ = load_model(route, profile, profile.sft_max_length)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:  # 03 had to add a pad token
        base.resize_token_embeddings(len(tokenizer))
    base.config.pad_token_id = base.generation_config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    # the base as loaded here (peft reads its config when saving); the saved folder names the hub id again
    model.peft_config["default"].base_model_name_or_path = base_id
    return model, tokenizer

# %%
model, tokenizer = load_sft_model(profile, adapter_dir)
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"{model.__class__.__name__} on {model.get_base_model().__class__.__name__}: {trainable:,} trainable parameters "
      f"(notebook 03's adapter); pad {tokenizer.pad_token!r}, eos {tokenizer.eos_token!r}")

# %% [markdown]
# ## Preference pairs: the model's own answers, with and without a guard against repeating itself
#
# Public preference sets (UltraFeedback, HH-RLHF) hold answers that people or strong models ranked. We
# build ours from a weakness notebook 03 measured: decoded **plain greedy** (always the most likely next
# token), the SFT model sometimes falls into a loop ("The virus is spread through the air. The virus is
# spread through the air. ...") or runs on to the length cap. 03 guards against it *at decoding time*, with
# a light repetition penalty on the answer's own tokens; `pipeline`, a chat server or an attendee's own
# `generate` call would not have that guard. DPO can move the preference **into the weights**:
#
# * **chosen**: the SFT model's answer decoded *with* 03's repetition penalty;
# * **rejected**: its **plain greedy** answer to the same question;
# * a question where the two decodings write the same answer teaches nothing, and is left out.
#
# Both answers come from the model itself, so DPO has no new facts to learn; the pairs differ exactly where
# greedy decoding starts to repeat itself, and that is where the loss pushes. The construction was chosen
# on a dev split of *training* topics (`scripts/benchmark_dpo.py`, in
# [docs/benchmarks.md](../docs/benchmarks.md)) against the classic one, the MedQuAD reference answer
# as chosen against the model's greedy answer as rejected, before the held-out topics were scored once.
#
# TRL's **conversational preference format** is one dict per pair: `prompt` is a list of chat messages,
# `chosen` and `rejected` are each a list with one assistant message. `DPOTrainer` applies the chat
# template itself, and, as `SFTTrainer` did, puts the loss on the answers only.

# %% tags=["export"]
# export
from workshop_utils.answers import generate_answers
from workshop_utils.chat import SYSTEM_PROMPT, to_messages


def make_pair(question, chosen, rejected, split):
    """One preference pair in TRL's conversational format (plus the split it belongs to)."""
    return {
        "prompt": to_messages(question, SYSTEM_PROMPT),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "split": split,
    }


def answer_twice(model, tokenizer, questions, *, max_new_tokens, repetition_penalty, desc):
    """The model's answers to each question: plain greedy, and greedy with a repetition penalty (the guard)."""
    greedy = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                              system_prompt=SYSTEM_PROMPT, desc=f"{desc}: plain greedy")
    guarded = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens, system_prompt=SYSTEM_PROMPT,
                               desc=f"{desc}: repetition penalty", repetition_penalty=repetition_penalty)
    return greedy, guarded


def build_pairs(questions, greedy, guarded, split, training_pairs=()):
    """chosen = the guarded answer, rejected = the plain greedy one, where they differ and neither is empty.

    Held-out pairs pass the ``training_pairs``: a held-out pair may share no answer with them (the model can
    write the same generic answer to two questions, and a shared answer would be a leak)."""
    seen = {text for p in training_pairs for text in (p["chosen"][0]["content"], p["rejected"][0]["content"])}
    return [make_pair(q, guard.text, plain.text, split) for q, plain, guard in zip(questions, greedy, guarded)
            if plain.text.strip() and guard.text.strip() and plain.text.strip() != guard.text.strip()
            and not {plain.text, guard.text} & seen]

# %% [markdown]
# The questions come from MedQuAD, loaded and checked as in 03: training pairs from training topics, held-out questions from
# the held-out topics (no disease, gene or drug in common). The model answers each question twice, in
# batches. The held-out answers are kept: they are the SFT model's "before" answers below.

# %%
with instruction_file_errors(profile):  # the same two lines as 03
    raw = load_dataset("json", data_files={"train": f"{profile.llm_data}/train.jsonl", "test": f"{profile.llm_data}/test.jsonl"})
dataset = check_instruction_dataset(raw, profile)
train_rows = dataset["train"].shuffle(seed=SEED).select(range(min(profile.dpo_train_pairs, len(dataset["train"]))))
test_rows = dataset["test"].select(range(min(profile.llm_generate_rows or len(dataset["test"]), len(dataset["test"]))))
estimates.announce(f"the SFT model answers {len(train_rows) + len(test_rows)} questions, twice",
                   estimates.generation_seconds(profile, 2 * (len(train_rows) + len(test_rows))))
settings = dict(max_new_tokens=profile.max_new_tokens, repetition_penalty=profile.dpo_guard_penalty)
train_greedy, train_guarded = answer_twice(model, tokenizer, train_rows["instruction"], desc="training questions", **settings)
sft_greedy, sft_guarded = answer_twice(model, tokenizer, test_rows["instruction"], desc="held-out questions", **settings)
train_pairs = build_pairs(train_rows["instruction"], train_greedy, train_guarded, "train")
test_pairs = build_pairs(test_rows["instruction"], sft_greedy, sft_guarded, "test", training_pairs=train_pairs)
print(f"{len(train_pairs)} training pairs from {len(train_rows)} questions, {len(test_pairs)} held-out pairs from "
      f"{len(test_rows)}: the other questions got the same answer both ways")
pair = max(train_pairs, key=lambda p: len(p["rejected"][0]["content"]))
print(f"\nprompt:   {pair['prompt'][-1]['content']}\nchosen:   {pair['chosen'][0]['content'][:400]}"
      f"\nrejected: {pair['rejected'][0]['content'][:400]}")

# %% [markdown]
# The pairs are an artefact worth keeping: `workshop dpo --data` trains on this file, and the loader
# checks it (every pair complete, no held-out prompt or answer also in training).

# %%
pairs_file = write_pairs(profile.outputs() / "dpo-pairs.jsonl", train_pairs + test_pairs)
checked_pairs = load_pairs(pairs_file)
print(f"wrote {display_path(pairs_file)}: {len(checked_pairs['train'])} training and {len(checked_pairs['test'])} held-out pairs")

# %% [markdown]
# ## Before DPO: the SFT model on the held-out questions
#
# Two kinds of figures, kept apart:
#
# * **the answers**, scored by notebook 03's own function (`score_chat_model`: NLL of the reference
#   answers, ROUGE-L, stop rate, looping) under **two decodings**, each named in its table: 03's
#   (greedy with the repetition penalty), so the figures compare with 03's, and **plain greedy**, the
#   decoding the pairs were built to fix. These are the headline.
# * **the implicit reward**, a training diagnostic: reward(y) = β (log π(y|x) − log π_ref(y|x)), its mean
#   **margin** (chosen minus rejected) on the held-out pairs, and **preference accuracy**, the share of
#   pairs whose margin is positive, as TRL's `rewards/accuracies` counts it: a tie is not a preference.
#   Before training the policy *is* the reference, every margin is exactly 0, so both start at 0 by
#   construction: they say whether training moved, not whether the answers got better.

# %% tags=["export"]
# export
from workshop_utils.answers import score_chat_model


def preference_metrics(policy, reference, beta):
    """Preference accuracy (margins > 0; a tie is not a preference, as in TRL) and the mean reward margin.

    ``policy`` and ``reference`` hold, for "chosen" and "rejected", one (sum of log-probabilities, tokens)
    per pair. reward = beta * (log pi - log pi_ref); margin = reward(chosen) - reward(rejected).
    """
    margins = [beta * ((pc - rc) - (pr - rr)) for (pc, _), (pr, _), (rc, _), (rr, _)
               in zip(policy["chosen"], policy["rejected"], reference["chosen"], reference["rejected"])]
    return {"preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "reward_margin": sum(margins) / len(margins)}


def score(model, tokenizer, questions, references, *, profile, desc, greedy=None, guarded=None):
    """The held-out answers scored as notebook 03 scores them (its decoding: the top-level figures) and under
    plain greedy decoding (``"plain_greedy"``). ``greedy``/``guarded``: answers the model already wrote, plain
    greedy and with the pairs' guard penalty (reused where that is 03's decoding too)."""
    settings = dict(max_new_tokens=profile.max_new_tokens, desc=desc)
    if profile.dpo_guard_penalty != profile.repetition_penalty:
        guarded = None
    as_03 = score_chat_model(model, tokenizer, questions, references, answers=guarded,
                             repetition_penalty=profile.repetition_penalty, **settings)
    plain = score_chat_model(model, tokenizer, questions, references, answers=greedy, nll=False, **settings)
    return {**as_03, "plain_greedy": {k: plain[k] for k in ("rougeL", "eos_rate", "repetition", "decoding", "answers")}}

# %%
BETA = profile.dpo_beta
questions, references = list(test_rows["instruction"]), list(test_rows["response"])
estimates.announce(f"scoring {len(questions)} held-out answers", estimates.nll_seconds(profile, len(questions)))
before = score(model, tokenizer, questions, references, profile=profile, desc="SFT model", greedy=sft_greedy,
               guarded=sft_guarded)
reference_logprobs = pair_logprobs(model, tokenizer, test_pairs, desc="SFT model, held-out pairs")
before.update(preference_metrics(reference_logprobs, reference_logprobs, BETA))
print(f"SFT model on {len(questions)} held-out questions: NLL of the references {before['nll']:.3f}; "
      f"looping {before['plain_greedy']['repetition']:.0%} of answers ({before['plain_greedy']['decoding']}), "
      f"{before['repetition']:.0%} ({before['decoding']})")

# %% [markdown]
# ## The recipe: `DPOConfig` and `DPOTrainer`
#
# `DPOConfig` is `TrainingArguments` plus the DPO settings. Worth knowing:
#
# * `beta`: see above; 0.1 is the paper's and TRL's default.
# * `loss_type=["sigmoid"]`: the DPO loss of the paper. TRL has a dozen others (IPO, hinge, ...) and
#   can mix them, e.g. with `"sft"` to keep the chosen answers likely.
# * `learning_rate`: TRL's default (1e-6) is for full fine-tuning; a LoRA adapter needs larger steps. The
#   profile's value was chosen with the pair construction, on the dev split (`scripts/benchmark_dpo.py`):
#   the largest rate tried kept the dev NLL of the references within 5% of SFT's and looped least.
# * `max_length`: prompt plus answer, cut beyond it; our answers fit in 03's `MAX_LENGTH`.
# * `warmup_steps`, `logging_steps`: a tenth of the run's steps each (at least one), the one line
#   computed before the call.
# * `bf16` defaults to on in `DPOConfig`; we pass the profile's precision instead (float32 on a CPU:
#   both off).
# * GPU or CPU, written out in three arguments, as in 03: `use_cpu` on a CPU; gradient checkpointing
#   (TRL's default is on) and the paged 8-bit optimizer only on a GPU, plain AdamW on a CPU.
# * `precompute_ref_log_probs=False`: the reference's log-probabilities are computed in each step (one
#   extra forward pass without gradients). `True` computes each pair's once, before training: that saves
#   time when the run passes over the pairs several times. The cell below prints how many passes this run
#   makes; at about one, each pair's reference pass runs about once either way.
# * `save_strategy="no"`: no checkpoints; we save the adapter ourselves after training. `seed=42` is the
#   notebook's `SEED`.
#
# The cell reads nothing but the profile and an output folder. `workshop dpo` calls the same function:
# its `--max-steps`, `--learning-rate` and `--beta` become the profile's values before the call, and only
# afterwards does it add what the notebook does not need, checkpoints so that an interrupted run resumes.

# %% tags=["export"]
# export
from trl import DPOConfig


def dpo_config(profile, output_dir):
    """The DPO recipe of this workshop for a run profile, written out; output_dir is the trainer's working folder."""
    tenth = max(1, profile.dpo_max_steps // 10)  # warm-up and logging: every tenth of the steps
    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=profile.dpo_max_steps,
        per_device_train_batch_size=profile.dpo_batch_size,
        learning_rate=profile.dpo_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=tenth,
        beta=profile.dpo_beta,
        loss_type=["sigmoid"],
        max_length=profile.sft_max_length,
        precompute_ref_log_probs=False,
        bf16=profile.bf16,
        fp16=profile.fp16,
        use_cpu=profile.device == "cpu",
        gradient_checkpointing=profile.device == "cuda",
        optim="paged_adamw_8bit" if profile.device == "cuda" else "adamw_torch",
        logging_steps=tenth,
        save_strategy="no",  # we save the adapter ourselves
        report_to="tensorboard",
        seed=42,  # the notebook's SEED
        data_seed=42,
    )


def save_adapter(model, tokenizer, output_dir):
    """Save the trained adapter (not TRL's frozen "ref" copy) and the tokenizer, in safetensors."""
    model.save_pretrained(output_dir, selected_adapters=["default"], safe_serialization=True)
    tokenizer.save_pretrained(output_dir)

# %%
print("loss computed in plain PyTorch (no GPU):", use_torch_loss_on_cpu())
dpo_args = dpo_config(profile, profile.outputs() / "dpo-checkpoints")
assert dpo_args.seed == SEED, "the recipe writes seed=42: change it there too"
trainer = DPOTrainer(
    model=model,
    args=dpo_args,
    train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train_pairs]),
    processing_class=tokenizer,
)
print("adapters on the model:", list(trainer.model.peft_config), "(default trains, ref is the frozen SFT copy)")
passes = dpo_args.max_steps * dpo_args.per_device_train_batch_size / len(train_pairs)
print(f"{dpo_args.max_steps} steps of {dpo_args.per_device_train_batch_size} pairs: {passes:.2f} passes over the "
      f"{len(train_pairs)} training pairs (the reference's forward pass runs once per pair and pass)")

# %% [markdown]
# ## Train
#
# Watch `rewards/margins` grow and `rewards/accuracies` (the share of the batch's pairs with a positive
# margin) rise on the training pairs: they show that the loss is doing its job, nothing more.

# %%
estimates.announce(f"{dpo_args.max_steps} DPO steps", estimates.dpo_train_seconds(profile))
with measure(profile.device) as cost:
    trainer.train()
print(f"{cost['seconds']:.0f} s, peak memory {gib(cost['peak_memory_bytes'])} "
      f"({'GPU' if profile.device == 'cuda' else 'process RSS'})")

# %%
curve = margin_curve(trainer.state.log_history)
plots.reward_margins(curve, title="DPO on the training pairs");

# %% [markdown]
# ## After DPO
# The same held-out questions, answered again by the trained model under both decodings, and the held-out
# pairs' rewards against the reference log-probabilities we kept.

# %%
estimates.announce(f"answering {len(questions)} held-out questions twice",
                   estimates.nll_seconds(profile, len(questions)) + estimates.generation_seconds(profile, 2 * len(questions)))
after = score(trainer.model, tokenizer, questions, references, profile=profile, desc="DPO model")
after_logprobs = pair_logprobs(trainer.model, tokenizer, test_pairs, desc="DPO model, held-out pairs")
after.update(preference_metrics(after_logprobs, reference_logprobs, BETA))

# %%
ANSWER_ROWS = {"nll": "NLL of the references (lower is better)", "rougeL": "ROUGE-L", "eos_rate": "stop rate",
               "repetition": "looping answers"}


def answer_table(decoding_of):
    """SFT vs SFT + DPO under one decoding; the reference answers' own looping rate beside them."""
    rows = {"SFT (03)": decoding_of(before), "SFT + DPO": decoding_of(after)}
    table = pd.DataFrame({name: {k: v for k, v in r.items() if k in ANSWER_ROWS} for name, r in rows.items()})
    table["reference answers"] = pd.Series({"repetition": before["references_looping"]})
    return table.rename(index=ANSWER_ROWS).round(3)


print(f"held-out answers, decoded as notebook 03 decodes ({before['decoding']}):")
print(answer_table(lambda r: r).to_string(na_rep=""))
print(f"\nheld-out answers, {before['plain_greedy']['decoding']} (what the pairs were built to change):")
print(answer_table(lambda r: r["plain_greedy"]).to_string(na_rep=""))
print(f"\ntraining diagnostic on {len(test_pairs)} held-out pairs: preference accuracy "
      f"{before['preference_accuracy']:.0%} -> {after['preference_accuracy']:.0%} (0% before by construction), "
      f"mean reward margin {before['reward_margin']:+.3f} -> {after['reward_margin']:+.3f}")
plots.before_after({"SFT (03)": {"looping (plain greedy)": before["plain_greedy"]["repetition"],
                                 "stop rate (plain greedy)": before["plain_greedy"]["eos_rate"]},
                    "SFT + DPO": {"looping (plain greedy)": after["plain_greedy"]["repetition"],
                                  "stop rate (plain greedy)": after["plain_greedy"]["eos_rate"]}},
                   title="Held-out topics, plain greedy decoding");

# %%
looped = [i for i, a in enumerate(before["plain_greedy"]["answers"]) if not a.stopped] or [0]
shown_rows = looped[:2]
print(side_by_side([questions[i] for i in shown_rows], [references[i] for i in shown_rows],
                   [before["plain_greedy"]["answers"][i] for i in shown_rows],
                   [after["plain_greedy"]["answers"][i] for i in shown_rows], n=2))

# %% [markdown]
# ### Reading the tables
#
# The plain-greedy table is the one the pairs aim at: if the looping row fell, DPO moved into the weights
# what the repetition penalty did at decoding time. The row "reference answers" is the same looping rule
# applied to MedQuAD's own answers: a few human answers repeat a phrase (lists of symptoms, "see your
# doctor"), so a model's looping rate is only a problem above that level. The NLL row says whether the
# model still finds the expert answers as likely as after SFT; the pairs never showed it those answers,
# so a large change there would be a side effect. The 03-decoding table shows what is left for the
# penalty to do.
#
# The reward rows are diagnostics: a positive margin and a preference accuracy above 0 show that the
# policy moved towards the chosen answers on pairs it never trained on; they say nothing about whether
# the answers got better, which is why they are not the headline. The figures measured on the offline
# profile, and the construction that was tried and dropped, are in
# [docs/benchmarks.md](../docs/benchmarks.md).

# %% [markdown]
# ## Saving the adapter and the record

# %%
dpo_dir = profile.outputs() / "dpo-adapter"
save_adapter(trainer.model, tokenizer, dpo_dir)
make_portable(dpo_dir, sft_base_model(profile, adapter_dir), title="Medical question answering LoRA adapter (SFT + DPO)", library="peft",
              summary="Notebook 03's SFT adapter, trained further with TRL's DPOTrainer on pairs of the model's own "
                      "answers (chosen: decoded with a repetition penalty; rejected: plain greedy). Not medical advice.",
              task="text-generation", dataset=profile.llm_data, made_by=f"notebook 05, profile `{profile.name}`",
              scores={"held-out answer NLL": after["nll"], "looping (plain greedy)": after["plain_greedy"]["repetition"]})
saved = sorted(p.name for p in dpo_dir.iterdir())
print(f"saved to {display_path(dpo_dir)}: {', '.join(saved)}")
assert "adapter_model.safetensors" in saved and not (dpo_dir / "ref").exists(), saved

RECORDED = ("nll", "rougeL", "eos_rate", "repetition", "decoding", "preference_accuracy", "reward_margin")


def record_of(scores):
    plain = {k: v for k, v in scores["plain_greedy"].items() if k != "answers"}
    return {**{k: scores[k] for k in RECORDED}, "plain_greedy": plain}


results = Results.for_profile(profile)
record = results.record("05_preference_dpo", "dpo", {
    "before": record_of(before),
    "after": record_of(after),
    "train_seconds": round(cost["seconds"], 2),
    "peak_memory_bytes": int(cost["peak_memory_bytes"]),
    "steps": int(trainer.state.global_step),
    "beta": BETA,
    "train_pairs": len(train_pairs),
    "eval_pairs": len(test_pairs),
    "eval_questions": len(questions),
})

# %% [markdown]
# ## Self-check
# What is checked, and the ✅ line states only that: DPO moved the policy on **unseen topics** (held-out
# preference accuracy above its 0% start, mean reward margin positive), and did not make the answers worse
# where the pairs aim: under plain greedy decoding the DPO model loops on no more held-out answers than the
# SFT model, with the reference answers' NLL at most 5% above SFT's. The `smoke` profile (CI) trains a
# handful of steps on a few pairs: there only the diagnostics and the NLL bound are checked.

# %%
plain_before, plain_after = before["plain_greedy"], after["plain_greedy"]
nll_change = after["nll"] / before["nll"] - 1
print(f"plain greedy, {len(questions)} held-out questions: looping {plain_before['repetition']:.0%} -> "
      f"{plain_after['repetition']:.0%}, stop rate {plain_before['eos_rate']:.0%} -> {plain_after['eos_rate']:.0%}; "
      f"NLL of the references {before['nll']:.3f} -> {after['nll']:.3f} ({nll_change:+.1%}); held-out preference "
      f"accuracy {after['preference_accuracy']:.0%}, mean reward margin {after['reward_margin']:+.3f}")
assert after["preference_accuracy"] > 0 and after["reward_margin"] > 0, "DPO did not move the held-out preferences"
assert nll_change <= 0.05, "DPO made the reference answers more than 5% less likely than after SFT"
if profile.name != "smoke":
    assert plain_after["repetition"] <= plain_before["repetition"], "DPO made plain greedy answers loop more often"
    print(f"✅ on unseen topics DPO moved the policy towards the chosen answers, kept the references' NLL within 5% "
          f"of SFT's, and plain greedy answers loop on {plain_after['repetition']:.0%} (SFT: {plain_before['repetition']:.0%})")
else:
    print("✅ on unseen topics DPO moved the policy towards the chosen answers and kept the references' NLL within 5% "
          "of SFT's (smoke: looping not checked after so few steps)")
