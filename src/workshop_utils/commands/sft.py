"""`workshop sft`: notebook 03's supervised fine-tuning as a command, for a terminal or a job scheduler.

    workshop sft --output-dir runs/medquad
    accelerate launch --multi_gpu --num_processes 2 -m workshop_utils.commands.cli sft --no-unsloth --output-dir ...

It loads the model by the route :func:`workshop_utils.routes.choose_route` picks, with notebook 03's own
recipe (:mod:`workshop_utils.recipes.qlora_llama3_sft`: ``load_model``, ``add_lora``,
``sft_training_config``), scores the base model on the held-out questions, fine-tunes, scores again, and
writes the adapter, the tokenizer and ``metrics.json``. Data parallel runs work on GPUs and on CPU
processes (torchrun starts them; without CUDA they form a gloo group). Only the main process generates,
scores and writes. Under FSDP or DeepSpeed ZeRO-3 (configs/accelerate, docs/scaling.md) the loading follows
:mod:`.scaling`, every process takes part in saving, and nothing is scored (one process cannot run a model
whose weights are split over all of them).

Safety rules: a folder holding a finished run (``metrics.json``) is refused unless ``--overwrite``; an
interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from .. import DataError, WorkshopError
from ..answers import parameter_counts, score_chat_model
from ..chat import SYSTEM_PROMPT, to_prompt_completion, truncation_report
from ..paths import METRICS_FILE, clear_previous_run, finish_run, is_main_process, write_json_atomic
from ..routes import SFTRoute, choose_route, use_torch_loss_on_cpu
from . import scaling

SEED = 42
INTERRUPT_ENV = "WORKSHOP_SFT_INTERRUPT_AT_STEP"  # tests: stop after saving this step, as a crash would



# --------------------------------------------------------------------------- the `workshop sft` command
def add_arguments(parser) -> None:
    parser.add_argument("--model", help="hub id, local folder or .gguf file (default: the profile's LLM for the chosen route)")
    parser.add_argument("--data", help="folder with train/test files, one jsonl/csv/tsv file (split here), or a hub id "
                                       "(default: the profile's instruction set)")
    parser.add_argument("--output-dir", required=True, help="where the adapter, tokenizer and metrics.json go")
    parser.add_argument("--instruction-field", help="field holding the instruction (default: the profile's)")
    parser.add_argument("--response-field", help="field holding the response (default: the profile's)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the profile's)")
    parser.add_argument("--max-length", type=int, help="tokens per training example; longer ones are cut (default: the profile's)")
    parser.add_argument("--lora-r", type=int, help="LoRA rank (default: the profile's; alpha scales with it)")
    parser.add_argument("--learning-rate", type=float, help="default: the profile's")
    parser.add_argument("--batch-size", type=int, help="per-device batch size (default: the profile's)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget when scoring (default: the profile's)")
    parser.add_argument("--repetition-penalty", type=float, help="when scoring, divide the logits of tokens the answer already "
                        "holds by this (1.0 = plain greedy; default: the profile's)")
    parser.add_argument("--eval-rows", type=int, help="held-out questions whose reference answers' NLL is measured (default: the profile's)")
    parser.add_argument("--generate-rows", type=int, help="of those, how many the model answers for ROUGE-L and the stop rate (default: the profile's)")
    parser.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction, default=None,
                        help="load the base model in 4-bit NF4 through bitsandbytes (default: the profile's; works on a CPU too)")
    parser.add_argument("--train-rows", type=int, help="training rows to use (default: the profile's)")
    parser.add_argument("--system-prompt", default=SYSTEM_PROMPT, help="system message ('' for none)")
    parser.add_argument("--no-unsloth", action="store_true", help="on a GPU, use transformers + bitsandbytes + peft instead of Unsloth")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    parser.add_argument("--seed", type=int, default=SEED)


def _is_path_like(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix.lower() in (".jsonl", ".json", ".csv", ".tsv")


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise WorkshopError(f"--{name} must be a positive number, got {value}")


def run(args) -> int:
    """`workshop sft`: load, score the base model, fine-tune, score again, save adapter + metrics.json."""
    from ..paths import check_output_dir, display_path
    from ..profiles import active_profile

    profile = active_profile()
    for name in ("max_steps", "max_length", "lora_r", "batch_size", "max_new_tokens", "eval_rows", "generate_rows", "train_rows",
                 "repetition_penalty"):
        _positive(name.replace("_", "-"), getattr(args, name))
    out = check_output_dir(args.output_dir, args.overwrite)

    fields = (args.instruction_field or profile.llm_fields[0], args.response_field or profile.llm_fields[1])
    source = args.data or profile.llm_data
    if _is_path_like(source) and not Path(source).expanduser().exists():
        raise DataError(f"{source}: file not found; check the --data path")
    from ..data import load_instruction_task

    # Validate the data before anything slow is loaded: bad input fails in a second, with one line.
    dd = load_instruction_task(
        source=str(Path(source).expanduser()) if _is_path_like(source) else source, fields=fields, seed=args.seed,
        max_rows={"train": args.train_rows or profile.llm_train_rows, "test": args.eval_rows or profile.llm_eval_rows},
    )
    if len(dd["train"]) == 0 or len(dd["test"]) == 0:
        raise DataError(f"{source}: needs rows in both training and held-out splits (got {len(dd['train'])} / {len(dd['test'])})")

    from accelerate import PartialState

    state = PartialState(cpu=profile.device == "cpu")
    if args.overwrite and is_main_process():
        clear_previous_run(out, also=("before.json",))
    state.wait_for_everyone()
    out.mkdir(parents=True, exist_ok=True)
    route = choose_route(profile, use_unsloth=not args.no_unsloth, model=resolve_model(args.model), load_in_4bit=args.load_in_4bit)
    launch = scaling.read_launch(os.environ)
    if route.name == "unsloth" and not scaling.allows_unsloth(launch):
        raise WorkshopError(f"{scaling.describe(launch)}: Unsloth's loader cannot split the weights; add --no-unsloth")
    if is_main_process():
        print(route.describe())
        print(scaling.describe(launch))
    result = train_and_score(profile, route, dd, out, args, state)
    if is_main_process():
        b, a = result["before"], result["after"]
        scored = (f"held-out NLL {b['nll']:.3f} -> {a['nll']:.3f}; ROUGE-L {b['rougeL']:.3f} -> {a['rougeL']:.3f}; "
                  f"stop rate {b['eos_rate']:.0%} -> {a['eos_rate']:.0%}; looping {b['repetition']:.0%} -> {a['repetition']:.0%}; "
                  if a else "not scored (the weights are split over the processes: score the adapter on one GPU); ")
        print(f"{scored}{result['train_seconds']:.0f} s, {result['tokens_per_second']:,.0f} tokens/s; "
              f"adapter and metrics.json in {display_path(out)}")
    return 0


def load_for_route(route: SFTRoute, profile, *, max_length: int, lora_r: int | None = None, seed: int = SEED):
    """(peft model, tokenizer) for the chosen route, through notebook 03's recipe: load, fix the pad token, add LoRA.

    Under FSDP / ZeRO-3 (:mod:`.scaling`) the model is loaded without the recipe's per-process ``device_map`` and
    with 4-bit weights stored in the compute dtype, and the adapters take that dtype after ``add_lora``."""
    from ..recipes import qlora_llama3_sft as recipe

    launch, four_bit = scaling.read_launch(os.environ), route.name == "bnb"
    try:
        if launch.shards_weights:
            model, tokenizer = scaling.load_sharded(route.model, launch, load_in_4bit=four_bit)
        else:
            model, tokenizer = recipe.load_model(route, profile, max_length)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise WorkshopError(f"{route.model}: could not load the model ({first[:200]}); check --model (a hub id, a local folder or a .gguf file)") from None
    recipe.ensure_distinct_pad(tokenizer, model)
    tokenizer.padding_side = "right"  # training pads on the right; generate_answers switches to left
    model = recipe.add_lora(model, route, profile, r=lora_r, seed=seed)
    scaling.match_adapter_dtype(model, launch, load_in_4bit=four_bit)
    return model, tokenizer


# what `workshop sft` adds to notebook 03's config after the call: a resumable run (checkpoints), its --seed and,
# under DDP, no search for unused parameters (the frozen base weights get no gradient, by design); under FSDP /
# ZeRO-3 also what scaling.training_overrides names (optimizer, checkpointing), which single-process runs never see
COMMAND_ONLY_FIELDS = ("output_dir", "save_strategy", "save_steps", "save_total_limit", "seed", "data_seed",
                       "ddp_find_unused_parameters")


def command_profile(args, profile):
    """The profile with the command line's recipe options in it (what the notebook reads as ``profile``)."""
    import dataclasses

    changes = {"sft_max_steps": args.max_steps, "sft_batch_size": args.batch_size, "sft_learning_rate": args.learning_rate,
               "sft_max_length": args.max_length}
    return dataclasses.replace(profile, **{k: v for k, v in changes.items() if v is not None})


def command_config(args, profile, route: SFTRoute, out: Path):
    """Notebook 03's ``SFTConfig`` for the profile the options changed, then the command's own fields
    (:data:`COMMAND_ONLY_FIELDS`): a checkpoint every third of the run, so that an interrupted run resumes."""
    import dataclasses

    from ..recipes.qlora_llama3_sft import sft_training_config

    config = sft_training_config(command_profile(args, profile), route, out)
    return dataclasses.replace(config, save_strategy="steps", save_steps=max(1, config.max_steps // 3), save_total_limit=2,
                               seed=args.seed, data_seed=args.seed, ddp_find_unused_parameters=False,
                               **scaling.training_overrides(scaling.read_launch(os.environ)))


def small_model_threads(model) -> int:
    """Use one CPU thread for a model too small to share out (returns the thread count now in use).

    With a hidden size of a few hundred or less, each matrix product is too little work to split: the
    threads spend their time waiting for each other, and on a busy machine two threads can be ten times
    slower than one. Only the unit tests' tiny model is that small; real models keep torch's default.
    """
    import torch

    if getattr(getattr(model, "config", None), "hidden_size", 10**6) <= 256:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def resolve_model(model: str | None) -> str | None:
    """A ``.gguf`` file becomes its converted safetensors folder (once, cached); anything else is kept."""
    if model and model.lower().endswith(".gguf"):
        from ..assets import convert_gguf, smollm2_gguf, smollm2_path

        try:
            if Path(model).expanduser().resolve() == smollm2_gguf().resolve():
                return str(smollm2_path())  # the packaged model: the profiles' converted copy
        except WorkshopError:
            pass
        return str(convert_gguf(model))
    return model


def held_out_scorer(tokenizer, dd, args, profile):
    """(a function scoring a model on the held-out questions, the settings it scores with): the NLL of every
    reference answer, and greedy answers (with the profile's repetition penalty) to the first N questions."""
    questions, references = list(dd["test"]["instruction"]), list(dd["test"]["response"])
    n_generate = min(len(questions), args.generate_rows or profile.llm_generate_rows or len(questions))
    max_new = args.max_new_tokens or profile.max_new_tokens
    penalty = args.repetition_penalty or profile.repetition_penalty
    system_prompt = args.system_prompt or None

    def scores(model, which: str) -> dict:
        scored = score_chat_model(model, tokenizer, questions, references, max_new_tokens=max_new, answered=n_generate,
                                  repetition_penalty=penalty, system_prompt=system_prompt, desc=which)
        scored.pop("answers")
        return scored

    return scores, {"eval_rows": len(questions), "generated_answers": n_generate, "max_new_tokens": max_new,
                    "repetition_penalty": penalty}


def score_base_once(state, out: Path, scores, model) -> dict[str, float]:
    """The base model's scores, measured by the main process, or read back when resuming an interrupted run."""
    before_file = out / "before.json"
    resuming = before_file.is_file()
    # every process looks before the main one writes: a process that looked later would skip the barrier
    # below, and the processes' barriers would pair up wrongly until two of them wait forever
    state.wait_for_everyone()
    if not resuming:
        if is_main_process():  # LoRA B starts at zero, so the fresh peft model answers like the base model
            write_json_atomic(before_file, scores(model, "base model"))
        state.wait_for_everyone()
    return json.loads(before_file.read_text(encoding="utf-8"))


def timed_train(trainer, out: Path, state, device: str) -> dict[str, Any]:
    """Train (resuming from the last checkpoint in ``out`` if any); seconds, tokens and peak memory of this run."""
    from ..metrics import peak_memory_bytes, reset_peak_memory
    from ..paths import interrupt_after_checkpoint, last_checkpoint

    for callback in interrupt_after_checkpoint(INTERRUPT_ENV):  # tests only
        trainer.add_callback(callback)
    resume = last_checkpoint(out)
    tokens_before = 0
    if resume is not None:
        tokens_before = json.loads((resume / "trainer_state.json").read_text(encoding="utf-8")).get("num_input_tokens_seen", 0)
        if is_main_process():
            print(f"resuming from {resume.name}")
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen - tokens_before
    return {"train_seconds": round(seconds, 2), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "train_tokens": int(tokens), "peak_memory_bytes": int(peak_memory_bytes(device)),
            "resumed_from": resume.name if resume else None}


def save_portable(model, tokenizer, out: Path, route: SFTRoute, profile, args, result: dict[str, Any], *,
                  save_weights: bool = True) -> None:
    """Save the adapter and the tokenizer, then make the folder load on another machine: its config names the base
    model by hub id, not by a path of this machine, and its README is the workshop's model card (licence of the
    base model) instead of TRL's blank template."""
    from ..cards import make_portable

    if save_weights:  # False: save_sharded wrote them
        model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    after = result["after"] or {}
    make_portable(
        out, route.model, library="peft", task="text-generation", dataset=args.data or profile.llm_data,
        title=f"LoRA adapter trained by `workshop sft` ({out.name})",
        summary=(f"A LoRA adapter (rank {result['lora_r']}) trained with TRL's `SFTTrainer` for {result['steps']} steps "
                 f"on {result['train_rows']} instruction/response rows, by the route `{route.name}`." + ("" if args.data else " Not medical advice.")),
        scores={"held-out answer NLL": after["nll"], "ROUGE-L": after["rougeL"], "stop rate": after["eos_rate"]} if after else {},
        made_by=f"`workshop sft`, profile `{profile.name}`, route `{route.name}`",
    )


def save_sharded(trainer, out: Path) -> None:
    """FSDP / ZeRO-3: every process holds a slice of the weights, so every process calls this; the Trainer gathers
    the adapter and the main process writes it (ZeRO-3 needs zero3_save_16bit_model). With SHARDED_STATE_DICT
    FSDP's save_model writes nothing: a full state dict for this save, as PEFT's FSDP-QLoRA guide does."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out))


def train_and_score(profile, route: SFTRoute, dd, out: Path, args, state) -> dict[str, Any]:
    import torch
    from transformers import set_seed
    from trl import SFTTrainer


    use_torch_loss_on_cpu()
    set_seed(args.seed)
    config = command_config(args, profile, route, out)
    model, tokenizer = load_for_route(route, profile, max_length=config.max_length, lora_r=args.lora_r, seed=args.seed)
    if profile.device == "cpu":
        small_model_threads(model)
    scores, score_settings = held_out_scorer(tokenizer, dd, args, profile)
    # split weights: a forward pass needs every process, so nobody scores alone (metrics hold null scores)
    sharded = scaling.read_launch(os.environ).shards_weights
    before = None if sharded else score_base_once(state, out, scores, model)
    train = to_prompt_completion(dd["train"], args.system_prompt or None)
    trunc = truncation_report(tokenizer, train, config.max_length)
    if is_main_process():
        print(f"max_length {config.max_length}: {trunc['truncated']} of {trunc['examples']} training examples "
              f"({trunc['share']:.1%}) are cut; the longest has {trunc['longest']} tokens")
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    cost = timed_train(trainer, out, state, profile.device)
    trainable, total = parameter_counts(trainer.model)
    if sharded:
        save_sharded(trainer, out)
    result: dict[str, Any] = {}
    if is_main_process():
        after = None if sharded else scores(trainer.model, "fine-tuned")
        result = {
            "before": before, "after": after,
            "model": route.model if not Path(route.model).exists() else Path(route.model).name,
            "model_parameters": total, "load_in_4bit": route.name in ("unsloth", "bnb"), **cost,
            "trainable_params": trainable, "route": route.name, "steps": int(trainer.state.global_step),
            "processes": state.num_processes, "max_length": config.max_length, "truncated_share": trunc["share"],
            "lora_r": args.lora_r or profile.lora_r, "train_rows": len(dd["train"]), **score_settings, "seed": args.seed,
        }
        save_portable(trainer.model, tokenizer, out, route, profile, args, result, save_weights=not sharded)
        finish_run(out, result)
    state.wait_for_everyone()
    if not result:
        result = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result
