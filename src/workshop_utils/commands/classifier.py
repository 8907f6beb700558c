"""`workshop train-classifier`: notebook 02's recipe as a command, for a terminal or a job scheduler.

    workshop train-classifier --train train.tsv --validation validation.tsv --output-dir runs/mrpc
    accelerate launch --multi_gpu --num_processes 2 -m workshop_utils.commands.cli train-classifier ...   # data parallel (CPU too)

What it does, in order: read and validate the files (one-line errors), evaluate the pretrained encoder
with its fresh classification head ("before"), fine-tune it with ``Trainer`` (optionally LoRA), evaluate
again ("after"), and write ``DIR/metrics.json`` plus the model (safetensors) and tokenizer to ``DIR``.

Safety rules:

* a folder that already holds a finished run (``metrics.json``) is refused unless ``--overwrite``;
* a folder that holds ``checkpoint-*`` from an interrupted run is resumed from its last complete
  checkpoint (same total number of steps as an uninterrupted run);
* under ``accelerate launch`` only the main process prints and writes.

Everything not given on the command line comes from the active run profile (``workshop profile``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .. import WorkshopError
from ..paths import clear_previous_run, finish_run, interrupt_after_checkpoint, is_main_process
from . import scaling

CRASH_ENV = "WORKSHOP_CLF_CRASH_AFTER_STEP"  # tests: stop after saving this step, as a crash would


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id or local folder of an encoder (default: the profile's classifier model)")
    parser.add_argument("--train", required=True, help="training file (.tsv GLUE-style, .csv or .jsonl)")
    parser.add_argument("--validation", required=True, help="validation file, same columns as --train")
    parser.add_argument("--output-dir", required=True, help="where metrics.json, the model and checkpoints go")
    parser.add_argument("--text-columns", help="one column, or two for a sentence pair, comma-separated "
                        "(default: sentence1,sentence2 / question1,question2 / sentence / text, whichever exist)")
    parser.add_argument("--label-column", default="label", help="column with the labels (default: label)")
    parser.add_argument("--label-names", help="comma-separated class names, needed when labels are text (e.g. negative,positive)")
    parser.add_argument("--epochs", type=float, help="training epochs (default: profile)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (default: profile; x10 with --lora)")
    parser.add_argument("--batch-size", type=int, help="batch size per process (default: profile)")
    parser.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: profile)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the head's initialisation and data order (default: 42)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r/alpha from the profile) instead of every weight")
    parser.add_argument("--evals-per-epoch", type=int,
                        help="evaluate and checkpoint this many times per epoch; the best evaluation's weights are kept "
                        "(default: 2, notebook 02's)")
    parser.add_argument("--save-steps", type=int, help="evaluate and checkpoint every N steps instead (overrides --evals-per-epoch)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")


# --------------------------------------------------------------------------- helpers
def _say(*parts) -> None:
    if is_main_process():
        print(*parts, flush=True)


def _world_size() -> int:
    """Processes taking part (accelerate/torchrun set WORLD_SIZE); 1 for a plain run."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def _split_names(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def plan_output_dir(out: Path, overwrite: bool) -> Path | None:
    """Check ``out`` and return the checkpoint to resume from (or None). Raises on a finished run."""
    from ..paths import check_output_dir, last_checkpoint

    out = check_output_dir(out, overwrite)
    return None if overwrite else last_checkpoint(out)


def _text_columns(dd) -> list[str]:
    """The columns the tokenizer reads: every column of the task but the label."""
    return [c for c in dd["train"].column_names if c != "label"]


def _scores(metrics: dict) -> dict[str, float]:
    return {k: round(float(metrics[f"eval_{k}"]), 4) for k in ("accuracy", "f1")}


def command_profile(args: argparse.Namespace, profile):
    """The profile with the command line's recipe options in it (what notebook 02's function reads)."""
    import dataclasses

    # with --lora and no --learning-rate, 10x the profile's rate, as notebook 02's LoRA section does
    default_rate = profile.clf_learning_rate * (10 if args.lora else 1)
    return dataclasses.replace(
        profile,
        clf_epochs=profile.clf_epochs if args.epochs is None else args.epochs,
        clf_learning_rate=args.learning_rate or default_rate,
        clf_batch_size=args.batch_size or profile.clf_batch_size,
    )


def command_training_args(args: argparse.Namespace, profile):
    """Notebook 02's ``TrainingArguments`` for the profile the options changed, then what only the command needs,
    set on the built arguments (``dataclasses.replace`` runs TrainingArguments' own checks again)."""
    import dataclasses

    from ..recipes.full_finetune_trainer import classifier_training_args

    run_profile = command_profile(args, profile)
    training_args = classifier_training_args(run_profile, args.output_dir)
    extra = {
        "save_only_model": False,  # keep the optimizer state in the checkpoints: an interrupted run resumes
        "seed": args.seed, "data_seed": args.seed,
    }
    if _world_size() > 1:
        # one label per row and a mean loss per batch: nothing to average over tokens across processes
        # (left on, transformers 5 multiplies this loss by the number of processes under DDP)
        extra["average_tokens_across_devices"] = False
    if args.save_steps:
        extra.update(eval_steps=args.save_steps, save_steps=args.save_steps)
    elif args.evals_per_epoch:  # a fraction of the run, as in the notebook
        every = 1 / (args.evals_per_epoch * run_profile.clf_epochs)
        extra.update(eval_steps=every, save_steps=every)
    return dataclasses.replace(training_args, **extra)


def _cadence(training_args) -> str:
    """How often the run evaluates: every N steps, or (a fraction of the run below 1) so many times per epoch."""
    if training_args.eval_steps >= 1:
        return f"every {training_args.eval_steps} steps"
    return f"{1 / (training_args.eval_steps * training_args.num_train_epochs):.3g} times per epoch"


# --------------------------------------------------------------------------- the command
def _load_task(args: argparse.Namespace, profile):
    """The data (validated), the model id and max_length; bad input fails here, before anything slow."""
    from ..data import load_classification_files

    dd = load_classification_files(
        {"train": args.train, "validation": args.validation},
        text_columns=_split_names(args.text_columns),
        label_column=args.label_column,
        label_names=_split_names(args.label_names),
        seed=args.seed,
    )
    model_id = args.model or profile.clf_model
    looks_local = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or Path(model_id).exists()
    if looks_local and not (Path(model_id).expanduser() / "config.json").is_file():
        raise WorkshopError(
            f"--model {model_id}: no config.json in that folder; pass a hub id (e.g. google-bert/bert-base-uncased) "
            "or a folder written by save_pretrained"
        )
    max_length = args.max_length or profile.clf_max_length
    if any(v is not None and v <= 0 for v in (args.epochs, args.learning_rate, args.batch_size, args.evals_per_epoch,
                                              args.save_steps)) or max_length <= 8:
        raise WorkshopError("--epochs, --learning-rate, --batch-size, --evals-per-epoch and --save-steps must be positive "
                            "and --max-length above 8")
    return dd, model_id, max_length


def _build_trainer(args: argparse.Namespace, profile, dd, model_id: str, max_length: int):
    """Notebook 02's recipe (model, LoRA, arguments) around a ``Trainer``; returns (trainer, trainable parameters)."""
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

    from ..recipes import full_finetune_trainer as recipe

    columns = _text_columns(dd)
    label_names = dd["train"].features["label"].names
    transformers.logging.set_verbosity_error()  # the "newly initialized weights" notice is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = recipe.classification_model(model_id, label_names, args.seed)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise WorkshopError(f"--model {model_id}: could not be loaded ({first[:160]}); pass a hub id or a folder with config.json") from None
    if args.lora:
        from peft import get_peft_model

        model = get_peft_model(model, recipe.classifier_lora_config(profile))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoded = dd.map(lambda batch: tokenizer(*[batch[c] for c in columns], truncation=True, max_length=max_length),
                     batched=True, remove_columns=columns)
    trainer = Trainer(
        model=model,
        args=command_training_args(args, profile),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),  # dynamic padding: each batch to its longest row
        compute_metrics=recipe.compute_metrics,  # notebook 02's: evaluate's accuracy and F1
        callbacks=interrupt_after_checkpoint(CRASH_ENV),  # tests only
    )
    return trainer, trainable


def _largest_peak(peak: int, world: int) -> int:
    """The largest process's peak memory, so the number means the same with one or many processes."""
    if world == 1:
        return peak
    import torch

    peak_t = torch.tensor([peak], dtype=torch.long)
    torch.distributed.all_reduce(peak_t, op=torch.distributed.ReduceOp.MAX)
    return int(peak_t.item())


def run(args: argparse.Namespace) -> int:
    from ..cards import make_portable
    from ..metrics import measure, training_state_bytes
    from ..paths import display_path
    from ..profiles import active_profile

    profile = active_profile()
    launch = scaling.read_launch(os.environ)
    if launch.shards_weights:  # the FSDP configs name Llama's layers; an encoder of 22-110 M parameters fits one GPU
        raise WorkshopError(f"{scaling.describe(launch)}: train-classifier keeps a whole model per process; "
                            "launch it with configs/accelerate/multi_gpu_ddp.yaml (data parallel)")
    out = Path(args.output_dir)
    resume_from = plan_output_dir(out, args.overwrite)
    dd, model_id, max_length = _load_task(args, profile)
    # heavy imports only now: the profile has set offline mode before transformers is imported
    trainer, trainable = _build_trainer(args, profile, dd, model_id, max_length)
    a = trainer.args
    _say(
        f"train-classifier: {display_path(model_id) if os.path.isabs(model_id) else model_id} on "
        f"{len(dd['train']):,} train / {len(dd['validation']):,} validation rows, "
        f"text {_text_columns(dd)}, labels {dd['train'].features['label'].names}; "
        f"{a.num_train_epochs:g} epochs, lr {a.learning_rate:g}, batch {a.per_device_train_batch_size} x {a.world_size} "
        f"process(es), max_length {max_length}, evaluated {_cadence(a)} (best kept)"
        f"{', LoRA' if args.lora else ''}; profile '{profile.name}' ({profile.device}/{profile.precision})"
    )
    if args.overwrite and is_main_process():
        clear_previous_run(out)
    # predict() scores without logging: an evaluate() before train() would open TensorBoard's writer before the
    # run has its folder (it would write into the current directory)
    before = _scores(trainer.predict(trainer.eval_dataset, metric_key_prefix="eval").metrics)
    _say(f"before fine-tuning: accuracy {before['accuracy']:.4f}, F1 {before['f1']:.4f}")
    if resume_from is not None:
        _say(f"resuming the interrupted run from {display_path(resume_from)}")
    with measure(profile.device) as m:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    after = _scores(trainer.evaluate())
    _say(f"after fine-tuning:  accuracy {after['accuracy']:.4f}, F1 {after['f1']:.4f}")
    peak = _largest_peak(int(m["peak_memory_bytes"]), a.world_size)
    trainer.save_model(str(out))  # main process only; safetensors (adapter only with --lora)
    if is_main_process():
        trainer.processing_class.save_pretrained(str(out))
        make_portable(out, model_id, title=f"{out.name}: paraphrase classifier ({'LoRA adapter' if args.lora else 'full fine-tune'})",
                      summary="Trained by `workshop train-classifier` on sentence pairs.", task="text-classification",
                      dataset=args.train, made_by=f"`workshop train-classifier`, profile `{profile.name}`",
                      library="peft" if args.lora else "transformers",
                      scores={"accuracy": after["accuracy"], "f1": after["f1"]})
        record = _record(args, profile, dd, model_id, max_length, trainer, trainable, resume_from)
        record.update(before=before, after=after, train_seconds=round(m["seconds"], 2), peak_memory_bytes=peak,
                      training_state_bytes=training_state_bytes(trainer.model, trainer.optimizer),
                      train_samples_per_second=round(float(result.metrics.get("train_samples_per_second", 0.0)), 3),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _finish(out, record)
    return 0


def _record(args, profile, dd, model_id, max_length, trainer, trainable, resume_from) -> dict:
    """What the run was (data, recipe, steps, evaluations) for ``metrics.json``; the scores are added by ``run``."""
    from ..paths import display_path

    a = trainer.args
    return {
        "model": display_path(model_id) if os.path.isabs(model_id) else model_id,
        "train_file": display_path(args.train),
        "validation_file": display_path(args.validation),
        "text_columns": _text_columns(dd),
        "label_names": dd["train"].features["label"].names,
        "rows": {"train": len(dd["train"]), "validation": len(dd["validation"])},
        "epochs": a.num_train_epochs,
        "learning_rate": a.learning_rate,
        "batch_size": a.per_device_train_batch_size,
        "processes": a.world_size,
        "max_length": max_length,
        "seed": args.seed,
        "lora": bool(args.lora),
        "trainable_params": int(trainable),
        "profile": profile.name,
        "precision": profile.precision,
        "global_step": int(trainer.state.global_step),
        "evals_every_steps": trainer.state.eval_steps,  # in steps (the arguments may hold a fraction of the run)
        "best_step": getattr(trainer.state, "best_global_step", None),
        "evaluations": [
            {"step": h["step"], "accuracy": round(h["eval_accuracy"], 4), "f1": round(h["eval_f1"], 4)}
            for h in trainer.state.log_history if "eval_accuracy" in h and "step" in h
        ],
        "resumed_from": resume_from.name if resume_from else None,
    }


def _finish(out: Path, record: dict) -> None:
    """Write metrics.json and drop the checkpoints (the final model is in ``out``), then say what the run did."""
    from ..paths import display_path

    finish_run(out, record)
    before, after = record["before"], record["after"]
    print(
        f"done in {record['train_seconds']:.0f} s ({record['train_samples_per_second']:.1f} samples/s, "
        f"{record['processes']} process(es)); accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
        f"F1 {before['f1']:.3f} -> {after['f1']:.3f}; model and metrics in {display_path(out)}",
        flush=True,
    )
