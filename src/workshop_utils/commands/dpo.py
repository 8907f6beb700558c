"""`workshop dpo`: notebook 05's preference tuning as a command (validation, resume, metrics.json).

The recipe (the pairs, the policy and reference, ``DPOConfig``, the implicit reward) is
:mod:`workshop_utils.recipes.preference_dpo`, generated from notebook 05's cells tagged ``export``;
reading and checking pairs files is :mod:`workshop_utils.dpo`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .. import WorkshopError
from ..dpo import PAIR_KEYS, load_pairs, margin_curve, pair_logprobs, write_pairs
from ..paths import check_output_dir, clear_previous_run, finish_run, write_json_atomic

INTERRUPT_ENV = "WORKSHOP_DPO_INTERRUPT_AT_STEP"  # tests: stop after saving this step, as a crash would


def add_arguments(parser) -> None:
    parser.add_argument("--adapter", required=True, help="the SFT adapter to start from (notebook 03's sft-adapter/ "
                                                         "or a `workshop sft --output-dir`)")
    parser.add_argument("--data", help="pairs file (JSON lines with prompt/chosen/rejected/split); default: build "
                                       "pairs from the profile's MedQuAD with the SFT model and keep them in --output-dir")
    parser.add_argument("--output-dir", required=True, help="where the DPO adapter, tokenizer, pairs and metrics.json go")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the profile's)")
    parser.add_argument("--learning-rate", type=float, help="default: the profile's")
    parser.add_argument("--beta", type=float, help="how strongly DPO holds the policy to the reference (default: the profile's)")
    parser.add_argument("--train-pairs", type=int, help="training prompts to build pairs from (default: the profile's)")
    parser.add_argument("--eval-pairs", type=int, help="held-out questions to answer and build pairs from (default: the profile's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    parser.add_argument("--seed", type=int, default=42)


def _check_arguments(args) -> Path:
    from ..paths import display_path

    for name in ("max_steps", "train_pairs", "eval_pairs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise WorkshopError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    for name in ("learning_rate", "beta"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise WorkshopError(f"--{name.replace('_', '-')} must be positive, got {value}")
    adapter = Path(args.adapter).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise WorkshopError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); give notebook 03's "
                            "outputs/<profile>/sft-adapter or a `workshop sft --output-dir`")
    out = Path(args.output_dir).expanduser()
    if out.resolve() == adapter.resolve():
        raise WorkshopError(f"{display_path(out)}: --output-dir must not be the --adapter folder (it would be overwritten)")
    check_output_dir(out, args.overwrite)
    return out


def run(args) -> int:
    """`workshop dpo`: SFT adapter -> pairs -> held-out scores -> DPOTrainer -> scores again -> metrics.json."""
    from ..paths import display_path
    from ..profiles import active_profile

    profile = active_profile()
    out = _check_arguments(args)
    pairs_given = load_pairs(args.data) if args.data else None  # bad input fails before anything slow loads
    if args.overwrite:
        clear_previous_run(out, also=("before.json", "pairs.jsonl"))
    out.mkdir(parents=True, exist_ok=True)
    result = train_and_score(profile, Path(args.adapter).expanduser(), out, args, pairs_given)
    b, a = result["before"], result["after"]
    bp, ap = b["plain_greedy"], a["plain_greedy"]
    print(f"held-out, {bp['decoding']}: looping {bp['repetition']:.0%} -> {ap['repetition']:.0%}, stop rate "
          f"{bp['eos_rate']:.0%} -> {ap['eos_rate']:.0%}; {b['decoding']}: looping {b['repetition']:.0%} -> "
          f"{a['repetition']:.0%}, ROUGE-L {b['rougeL']:.3f} -> {a['rougeL']:.3f}; NLL {b['nll']:.3f} -> {a['nll']:.3f}; "
          f"preference accuracy {a['preference_accuracy']:.0%}, reward margin {a['reward_margin']:+.3f}; "
          f"{result['train_seconds']:.0f} s; adapter and metrics.json in {display_path(out)}")
    return 0


def _held_out_rows(profile, args):
    from ..data import load_instruction_task

    test = load_instruction_task(profile)["test"]
    n = min(len(test), args.eval_pairs or profile.llm_generate_rows or len(test))
    return list(test[:n]["instruction"]), list(test[:n]["response"])


def _pairs_for_run(profile, model, tokenizer, out: Path, args, pairs_given, recipe, questions):
    """(pairs, the SFT model's held-out answers as (greedy, guarded) or None): the pairs given, the pairs an
    interrupted run built, or new pairs built with the SFT model (which also answers the held-out questions)."""
    if pairs_given is not None:
        return pairs_given, None
    kept = out / "pairs.jsonl"
    if kept.is_file():
        return load_pairs(kept), None
    from ..data import load_instruction_task

    train = load_instruction_task(profile)["train"]
    rows = train.shuffle(seed=args.seed).select(range(min(len(train), args.train_pairs or profile.dpo_train_pairs)))
    settings = dict(max_new_tokens=profile.max_new_tokens, repetition_penalty=profile.dpo_guard_penalty)
    greedy, guarded = recipe.answer_twice(model, tokenizer, rows["instruction"], desc="training questions", **settings)
    held_greedy, held_guarded = recipe.answer_twice(model, tokenizer, questions, desc="held-out questions", **settings)
    train_pairs = recipe.build_pairs(rows["instruction"], greedy, guarded, "train")
    pairs = train_pairs + recipe.build_pairs(questions, held_greedy, held_guarded, "test", training_pairs=train_pairs)
    write_pairs(kept, pairs)
    return load_pairs(kept), (held_greedy, held_guarded)


def _record(scores: dict[str, Any]) -> dict[str, Any]:
    """The figures of :func:`recipe.score` without the answers themselves."""
    plain = {k: v for k, v in scores["plain_greedy"].items() if k != "answers"}
    return {**{k: v for k, v in scores.items() if k not in ("answers", "plain_greedy")}, "plain_greedy": plain}


def _score_sft(profile, model, tokenizer, out: Path, recipe, questions, references, held_answers, test_pairs, beta):
    """The SFT model's held-out record, with the reference log-probabilities of the held-out pairs (kept in
    before.json: a resumed run needs them)."""
    before_file = out / "before.json"
    if before_file.is_file():  # resuming: the SFT model was scored by the interrupted run
        return json.loads(before_file.read_text(encoding="utf-8"))
    greedy, guarded = held_answers or (None, None)
    before = _record(recipe.score(model, tokenizer, questions, references, profile=profile, desc="SFT model",
                                  greedy=greedy, guarded=guarded))
    logprobs = pair_logprobs(model, tokenizer, test_pairs, desc="SFT model, held-out pairs")
    before.update(recipe.preference_metrics(logprobs, logprobs, beta), logprobs=logprobs)
    write_json_atomic(before_file, before)
    return before


def command_profile(args, profile):
    """The profile with the command line's --max-steps, --learning-rate and --beta in place of its own values."""
    return dataclasses.replace(profile, dpo_max_steps=args.max_steps or profile.dpo_max_steps,
                               dpo_learning_rate=args.learning_rate or profile.dpo_learning_rate,
                               dpo_beta=args.beta or profile.dpo_beta)


def command_config(args, profile, out: Path):
    """Notebook 05's ``DPOConfig``, called as the notebook calls it (on the command's profile), then what only the
    command needs: a checkpoint a third of the way through (two kept) so that an interrupted run resumes, and
    --seed where it is not the recipe's. ``dataclasses.replace`` builds the config again, so that DPOConfig's
    ``__post_init__`` checks and converts the added values as it does its own."""
    from ..recipes.preference_dpo import dpo_config

    config = dpo_config(command_profile(args, profile), out)
    resumable = dict(save_strategy="steps", save_steps=max(1, config.max_steps // 3), save_total_limit=2)
    seeds = {} if args.seed == config.seed else dict(seed=args.seed, data_seed=args.seed)
    return dataclasses.replace(config, **resumable, **seeds)


def train_and_score(profile, adapter: Path, out: Path, args, pairs_given=None) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOTrainer

    from ..cards import make_portable
    from ..metrics import measure
    from ..paths import interrupt_after_checkpoint, last_checkpoint
    from ..recipes import preference_dpo as recipe
    from ..routes import use_torch_loss_on_cpu

    use_torch_loss_on_cpu()
    set_seed(args.seed)
    model, tokenizer = recipe.load_sft_model(profile, adapter)
    questions, references = _held_out_rows(profile, args)
    pairs, held_answers = _pairs_for_run(profile, model, tokenizer, out, args, pairs_given, recipe, questions)
    config = command_config(args, profile, out)
    beta = config.beta
    before = _score_sft(profile, model, tokenizer, out, recipe, questions, references, held_answers, pairs["test"], beta)
    train = Dataset.from_list([{k: p[k] for k in PAIR_KEYS} for p in pairs["train"]])
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer,
                         callbacks=interrupt_after_checkpoint(INTERRUPT_ENV))  # the callback: tests only
    resume = last_checkpoint(out)
    if resume is not None:
        print(f"resuming from {resume.name}")
    with measure(profile.device) as cost:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    after = _record(recipe.score(trainer.model, tokenizer, questions, references, profile=profile, desc="DPO model"))
    after.update(recipe.preference_metrics(pair_logprobs(trainer.model, tokenizer, pairs["test"], desc="DPO model, held-out pairs"),
                                           before["logprobs"], beta))
    recipe.save_adapter(trainer.model, tokenizer, out)
    make_portable(out, recipe.sft_base_model(profile, adapter), title=f"{out.name}: LoRA adapter (SFT + DPO)",
                  library="peft", task="text-generation", dataset=profile.llm_data, made_by=f"`workshop dpo`, profile `{profile.name}`",
                  summary=f"The SFT adapter `{adapter.name}`, trained further with TRL's DPOTrainer. Not medical advice.",
                  scores={"held-out answer NLL": after["nll"], "looping (plain greedy)": after["plain_greedy"]["repetition"]})
    result = {
        "before": {k: v for k, v in before.items() if k != "logprobs"}, "after": after,
        "train_seconds": round(cost["seconds"], 2), "peak_memory_bytes": int(cost["peak_memory_bytes"]),
        "steps": int(trainer.state.global_step), "beta": beta, "learning_rate": config.learning_rate,
        "train_pairs": len(pairs["train"]), "eval_pairs": len(pairs["test"]), "eval_questions": len(questions),
        "adapter": adapter.name, "resumed_from": resume.name if resume else None, "seed": args.seed,
        "margins_during_training": margin_curve(trainer.state.log_history),
        "pairs": "given" if pairs_given is not None else "pairs.jsonl",
    }
    finish_run(out, result)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


__all__ = ["add_arguments", "command_config", "command_profile", "run"]
