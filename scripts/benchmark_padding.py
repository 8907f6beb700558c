"""How much does dynamic padding buy? Train the same model on the same rows with two recipes.

* project recipe: truncate at 128 tokens, pad each batch to its longest pair (DataCollatorWithPadding),
  bf16/fp16 when a GPU supports it;
* seed-tutorial recipe: ``padding="max_length"`` to the model's full 512 positions, fp32, no
  dynamic padding.

Both use Trainer with the same seed, learning rate, batch size and epochs, and the same rows; the script
prints training samples/s of each, their ratio and both validation accuracies.

    .venv/bin/python scripts/benchmark_padding.py                       # data/paraphrase, all rows
    .venv/bin/python scripts/benchmark_padding.py --train-rows 256      # a quicker run
    .venv/bin/python scripts/benchmark_padding.py path/train.tsv path/validation.tsv
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="train and validation files (default: data/paraphrase/{train,validation}.tsv)")
    p.add_argument("--model", help="encoder (default: the active profile's classifier model)")
    p.add_argument("--train-rows", type=int, help="use at most this many training rows")
    p.add_argument("--eval-rows", type=int, help="use at most this many validation rows")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from workshop_utils.profiles import active_profile

    profile = active_profile()
    from workshop_utils import WorkshopError
    from workshop_utils.data import load_classification_files
    from workshop_utils.paths import data_dir

    if args.files and len(args.files) != 2:
        print("error: give two files (train and validation) or none", file=sys.stderr)
        return 2
    train_file, val_file = args.files or (data_dir() / "paraphrase" / "train.tsv", data_dir() / "paraphrase" / "validation.tsv")
    try:
        dd = load_classification_files(
            {"train": train_file, "validation": val_file},
            max_rows={"train": args.train_rows, "validation": args.eval_rows},
            seed=args.seed,
        )
    except WorkshopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    columns = [c for c in dd["train"].column_names if c != "label"]

    import numpy as np
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from workshop_utils.metrics import compute_classification_metrics

    transformers.logging.set_verbosity_error()
    model_id = args.model or profile.clf_model
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    full_length = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2).config.max_position_embeddings

    recipes = {
        "project (dynamic, 128)": dict(max_length=128, padding=False, collator=DataCollatorWithPadding(tokenizer),
                                       bf16=profile.bf16, fp16=profile.fp16),
        f"seed tutorial (max_length {full_length}, fp32)": dict(max_length=full_length, padding="max_length",
                                                                collator=default_data_collator, bf16=False, fp16=False),
    }
    print(f"model {model_id if not Path(model_id).is_absolute() else Path(model_id).parent.name}, "
          f"{len(dd['train'])} train / {len(dd['validation'])} validation rows, {args.epochs:g} epoch(s), "
          f"batch {args.batch_size}, lr {args.learning_rate:g}, device {profile.device}", flush=True)

    outcome = {}
    for name, r in recipes.items():
        def tokenize(batch, r=r):
            return tokenizer(*[batch[c] for c in columns], truncation=True, max_length=r["max_length"], padding=r["padding"])

        encoded = dd.map(tokenize, batched=True, remove_columns=columns)
        transformers.set_seed(args.seed)
        model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=2)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=tmp, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                    per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
                    save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
                    bf16=r["bf16"], fp16=r["fp16"], use_cpu=profile.use_cpu, seed=args.seed,
                ),
                train_dataset=encoded["train"], eval_dataset=encoded["validation"],
                data_collator=r["collator"], compute_metrics=compute_classification_metrics,
            )
            start = time.perf_counter()
            out = trainer.train()
            seconds = time.perf_counter() - start
            scores = trainer.evaluate()
        outcome[name] = dict(sps=out.metrics["train_samples_per_second"], seconds=seconds,
                             accuracy=scores["eval_accuracy"], f1=scores["eval_f1"])
        print(f"{name}: {outcome[name]['sps']:.2f} samples/s ({seconds:.0f} s), "
              f"accuracy {scores['eval_accuracy']:.3f}, F1 {scores['eval_f1']:.3f}", flush=True)

    (fast_name, fast), (slow_name, slow) = outcome.items()
    ratio = fast["sps"] / slow["sps"]
    print("\n" + "-" * 72)
    for name, o in outcome.items():
        print(f"{name:>36}: {o['sps']:8.2f} samples/s   accuracy {o['accuracy']:.3f}   F1 {o['f1']:.3f}")
    print(f"{'speed-up':>36}: {ratio:.1f}x; accuracy difference {fast['accuracy'] - slow['accuracy']:+.3f}")
    print("-" * 72)
    return 0


if __name__ == "__main__":
    sys.exit(main())
