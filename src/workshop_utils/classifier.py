"""`workshop train-classifier`: notebook 02's recipe as a command, for a terminal or a job scheduler.

    workshop train-classifier --train train.tsv --validation validation.tsv --output-dir runs/mrpc
    accelerate launch --multi_gpu --num_processes 2 -m workshop_utils.cli train-classifier ...   # data parallel (CPU too)

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
import shutil
import sys
import time
from pathlib import Path

from . import WorkshopError
from .paths import write_json_atomic

METRICS_FILE = "metrics.json"
# Test hook: exit hard right after the checkpoint of this step is written (simulates a crash/kill).
CRASH_ENV = "WORKSHOP_CLF_CRASH_AFTER_STEP"


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
    parser.add_argument("--evals-per-epoch", type=int, default=2,
                        help="evaluate and checkpoint this many times per epoch; the best evaluation's weights are kept (default: 2)")
    parser.add_argument("--save-steps", type=int, help="evaluate and checkpoint every N steps instead (overrides --evals-per-epoch)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")


# --------------------------------------------------------------------------- helpers
def _is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _say(*parts) -> None:
    if _is_main():
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
    from .paths import display_path, last_checkpoint, refuse_checkpoint_lookalikes

    if out.exists() and not out.is_dir():
        raise WorkshopError(f"{display_path(out)}: exists and is a file; pass a folder to --output-dir")
    if (out / METRICS_FILE).is_file() and not overwrite:
        raise WorkshopError(
            f"{display_path(out)} already holds a finished run ({METRICS_FILE}); "
            "pass --overwrite to replace it or choose another --output-dir"
        )
    refuse_checkpoint_lookalikes(out)
    if overwrite:
        return None
    return last_checkpoint(out)


def clear_previous_run(out: Path) -> None:
    """--overwrite: remove what an earlier run of this command wrote (and nothing else)."""
    from .paths import trainer_checkpoints

    for checkpoint in trainer_checkpoints(out):
        shutil.rmtree(checkpoint)
    (out / METRICS_FILE).unlink(missing_ok=True)


def _scores(metrics: dict) -> dict[str, float]:
    return {k: round(float(metrics[f"eval_{k}"]), 4) for k in ("accuracy", "f1")}


def _compute_metrics(eval_pred):
    """Accuracy and F1: F1 of class 1 for two classes (as GLUE reports it), macro-F1 for more."""
    import numpy as np

    from .metrics import accuracy_f1

    logits, labels = eval_pred
    if isinstance(logits, tuple):
        logits = logits[0]
    preds = np.argmax(logits, axis=-1)
    n_classes = logits.shape[-1]
    if n_classes <= 2:
        return accuracy_f1(preds, labels)
    f1s = [accuracy_f1((preds == c).astype(int), (labels == c).astype(int))["f1"] for c in range(n_classes)]
    return {"accuracy": float(np.mean(preds == labels)), "f1": float(np.mean(f1s))}


# --------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    from .data import load_classification_files
    from .paths import display_path, trainer_checkpoints
    from .profiles import active_profile

    profile = active_profile()
    out = Path(args.output_dir)
    resume_from = plan_output_dir(out, args.overwrite)

    text_columns = _split_names(args.text_columns)
    dd = load_classification_files(
        {"train": args.train, "validation": args.validation},
        text_columns=text_columns,
        label_column=args.label_column,
        label_names=_split_names(args.label_names),
        seed=args.seed,
    )
    columns = [c for c in dd["train"].column_names if c != "label"]
    label_names = dd["train"].features["label"].names

    model_id = args.model or profile.clf_model
    looks_local = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or Path(model_id).exists()
    if looks_local and not (Path(model_id).expanduser() / "config.json").is_file():
        raise WorkshopError(
            f"--model {model_id}: no config.json in that folder; pass a hub id (e.g. google-bert/bert-base-uncased) "
            "or a folder written by save_pretrained"
        )
    epochs = args.epochs if args.epochs is not None else profile.clf_epochs
    lr = args.learning_rate if args.learning_rate is not None else profile.clf_learning_rate * (10 if args.lora else 1)
    batch_size = args.batch_size or profile.clf_batch_size
    max_length = args.max_length or profile.clf_max_length
    if epochs <= 0 or lr <= 0 or batch_size <= 0 or max_length <= 8:
        raise WorkshopError("--epochs, --learning-rate and --batch-size must be positive and --max-length above 8")

    # Heavy imports only now: the profile has set offline mode before transformers is imported.
    import torch
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from .metrics import measure

    transformers.logging.set_verbosity_error()  # the "newly initialized weights" notice is expected here
    transformers.set_seed(args.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_id,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise WorkshopError(f"--model {model_id}: could not be loaded ({first[:160]}); pass a hub id or a folder with config.json") from None

    if args.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=profile.lora_r,
                lora_alpha=profile.lora_alpha,
                lora_dropout=profile.lora_dropout,  # 0 in every profile: ~1.25x faster on a CPU
                # every linear layer (attention, feed-forward, pooler; BERT names), as QLoRA does
                target_modules=["query", "key", "value", "dense"],
            ),
        )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def tokenize(batch):
        return tokenizer(*[batch[c] for c in columns], truncation=True, max_length=max_length)

    encoded = dd.map(tokenize, batched=True, remove_columns=columns)

    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)

    class CrashAfterSave(TrainerCallback):  # only armed by the test hook
        def on_save(self, args_, state, control, **kwargs):
            if crash_after and state.global_step >= crash_after:
                print(f"[{CRASH_ENV}] stopping hard after checkpoint {state.global_step}", file=sys.stderr, flush=True)
                os._exit(3)

    # Evaluate and checkpoint a few times per epoch and keep the best evaluation's weights: on a small
    # set like MRPC accuracy moves by a point or two between neighbouring evaluations.
    steps_per_epoch = -(-len(encoded["train"]) // (batch_size * _world_size()))
    every = args.save_steps or max(1, -(-steps_per_epoch // max(1, args.evals_per_epoch)))
    training_args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size * 2,
        weight_decay=0.01,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        save_total_limit=2,
        logging_steps=max(1, min(50, len(encoded["train"]) // batch_size // 4)),
        bf16=profile.bf16,
        fp16=profile.fp16,
        use_cpu=profile.use_cpu,
        seed=args.seed,
        data_seed=args.seed,
        report_to="none",
        disable_tqdm=not _is_main(),
        # One label per row, a mean loss per batch: nothing to average over tokens across processes.
        # (Left on, transformers 5 multiplies this model's loss by the number of processes under DDP.)
        average_tokens_across_devices=False,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),  # dynamic padding: each batch to its longest row
        compute_metrics=_compute_metrics,
        callbacks=[CrashAfterSave()] if crash_after else [],
    )
    world = training_args.world_size

    _say(
        f"train-classifier: {display_path(model_id) if os.path.isabs(model_id) else model_id} on "
        f"{len(dd['train']):,} train / {len(dd['validation']):,} validation rows, text {columns}, labels {label_names}; "
        f"{epochs:g} epochs, lr {lr:g}, batch {batch_size} x {world} process(es), max_length {max_length}, "
        f"evaluated every {every} steps (best kept)"
        f"{', LoRA' if args.lora else ''}; profile '{profile.name}' ({profile.device}/{profile.precision})"
    )
    if args.overwrite and _is_main():
        clear_previous_run(out)
    before = _scores(trainer.evaluate())
    _say(f"before fine-tuning: accuracy {before['accuracy']:.4f}, F1 {before['f1']:.4f}")

    if resume_from is not None:
        _say(f"resuming the interrupted run from {display_path(resume_from)}")
    with measure(profile.device) as m:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    after = _scores(trainer.evaluate())
    _say(f"after fine-tuning:  accuracy {after['accuracy']:.4f}, F1 {after['f1']:.4f}")

    peak = int(m["peak_memory_bytes"])
    if world > 1:  # the largest process's peak, so the number means the same with one or many processes
        peak_t = torch.tensor([peak], dtype=torch.long)
        torch.distributed.all_reduce(peak_t, op=torch.distributed.ReduceOp.MAX)
        peak = int(peak_t.item())

    trainer.save_model(str(out))  # main process only; safetensors (adapter only with --lora)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        record = {
            "model": display_path(model_id) if os.path.isabs(model_id) else model_id,
            "train_file": display_path(args.train),
            "validation_file": display_path(args.validation),
            "text_columns": columns,
            "label_names": label_names,
            "rows": {"train": len(dd["train"]), "validation": len(dd["validation"])},
            "epochs": epochs,
            "learning_rate": lr,
            "batch_size": batch_size,
            "processes": world,
            "max_length": max_length,
            "seed": args.seed,
            "lora": bool(args.lora),
            "trainable_params": int(trainable),
            "profile": profile.name,
            "precision": profile.precision,
            "before": before,
            "after": after,
            "global_step": int(trainer.state.global_step),
            "evals_every_steps": every,
            "best_step": getattr(trainer.state, "best_global_step", None),
            "evaluations": [
                {"step": h["step"], "accuracy": round(h["eval_accuracy"], 4), "f1": round(h["eval_f1"], 4)}
                for h in trainer.state.log_history if "eval_accuracy" in h and "step" in h
            ],
            "resumed_from": resume_from.name if resume_from else None,
            "train_seconds": round(m["seconds"], 2),
            "train_samples_per_second": round(float(result.metrics.get("train_samples_per_second", 0.0)), 3),
            "peak_memory_bytes": peak,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for ckpt in trainer_checkpoints(out):
            shutil.rmtree(ckpt, ignore_errors=True)  # the final model is in DIR; checkpoints were for resuming
        write_json_atomic(out / METRICS_FILE, record)  # written last: its presence means "finished"
        print(
            f"done in {m['seconds']:.0f} s ({record['train_samples_per_second']:.1f} samples/s, {world} process(es)); "
            f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, F1 {before['f1']:.3f} -> {after['f1']:.3f}; "
            f"model and metrics in {display_path(out)}",
            flush=True,
        )
    return 0
