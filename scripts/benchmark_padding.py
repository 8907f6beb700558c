"""How much does the project's recipe buy over the seed tutorial's? Train the same model on the same rows.

Recipes, all with Trainer, the same seed, learning rate, batch size, epochs and rows:

* ``project``: what notebook 02 and ``workshop train-classifier`` do: truncate at the profile's
  max_length (128), pad each batch to its longest row (``DataCollatorWithPadding``), bf16/fp16 where
  the GPU supports it;
* ``project + length grouping``: the same with batches of similar lengths
  (``train_sampling_strategy="group_by_length"``), a further speed-up this project does not use by
  default (it makes batches less random; see docs/benchmarks.md);
* ``seed tutorial``: ``padding="max_length"`` to the model's full 512 positions, fp32.

It prints training samples/s of each, the speed-up of the project's recipe over the seed tutorial's,
and the validation accuracy and F1 of each (evaluated with the recipe's own padding).

    .venv/bin/python scripts/benchmark_padding.py                    # data/paraphrase, 512 training rows, 2 epochs (~15 min on 2 CPU cores)
    .venv/bin/python scripts/benchmark_padding.py path/train.tsv path/validation.tsv --train-rows 1024
    .venv/bin/python scripts/benchmark_padding.py --json outputs/benchmark_padding.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="train and validation files (default: data/paraphrase/{train,validation}.tsv)")
    p.add_argument("--model", help="encoder (default: the active profile's classifier model)")
    p.add_argument("--train-rows", type=int, default=512, help="training rows, the same for every recipe (default: 512)")
    p.add_argument("--eval-rows", type=int, default=200, help="validation rows (default: 200)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=3e-4,
                   help="peak learning rate (default 3e-4: high enough that 64 steps leave the majority class)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--seed-max-length", type=int,
                   help="the seed tutorial's padded length (default: the model's max_position_embeddings, 512 for BERT)")
    p.add_argument("--skip-grouping", action="store_true", help="do not run the 'project + length grouping' recipe")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from workshop_utils.profiles import active_profile

    profile = active_profile()  # before transformers is imported: offline mode when there is no hub
    from workshop_utils import WorkshopError
    from workshop_utils.data import load_classification_files
    from workshop_utils.paths import data_dir, display_path

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
    n_labels = len(dd["train"].features["label"].names)

    import transformers
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from workshop_utils.recipes.full_finetune_trainer import compute_metrics

    transformers.logging.set_verbosity_error()
    model_id = args.model or profile.clf_model
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    full_length = args.seed_max_length or AutoConfig.from_pretrained(model_id).max_position_embeddings

    dynamic = dict(max_length=profile.clf_max_length, padding=False, collator=DataCollatorWithPadding(tokenizer),
                   bf16=profile.bf16, fp16=profile.fp16)
    recipes = {"project": dict(dynamic, sampling="random")}
    if not args.skip_grouping:
        recipes["project + length grouping"] = dict(dynamic, sampling="group_by_length")
    recipes["seed tutorial"] = dict(max_length=full_length, padding="max_length", collator=default_data_collator,
                                    bf16=False, fp16=False, sampling="random")

    shown_model = Path(model_id).parent.name if Path(model_id).is_absolute() else model_id
    print(f"model {shown_model}; {len(dd['train'])} train / {len(dd['validation'])} validation rows from "
          f"{display_path(train_file)}; {args.epochs:g} epoch(s), batch {args.batch_size}, lr {args.learning_rate:g}, "
          f"device {profile.device}/{profile.precision}; seed tutorial pads to {full_length} tokens", flush=True)

    outcome = {}
    for name, r in recipes.items():
        def tokenize(batch, r=r):
            return tokenizer(*[batch[c] for c in columns], truncation=True, max_length=r["max_length"], padding=r["padding"])

        encoded = dd.map(tokenize, batched=True, remove_columns=columns)
        tokens = sum(len(ids) for ids in encoded["train"]["input_ids"])
        transformers.set_seed(args.seed)
        model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=n_labels)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=tmp, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                    per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
                    train_sampling_strategy=r["sampling"], save_strategy="no", eval_strategy="no",
                    logging_strategy="no", report_to="none", bf16=r["bf16"], fp16=r["fp16"],
                    use_cpu=profile.use_cpu, seed=args.seed,
                ),
                train_dataset=encoded["train"], eval_dataset=encoded["validation"],
                processing_class=tokenizer, data_collator=r["collator"],
                compute_metrics=compute_metrics,
            )
            start = time.perf_counter()
            out = trainer.train()
            seconds = time.perf_counter() - start
            scores = trainer.evaluate()
        outcome[name] = dict(samples_per_second=round(out.metrics["train_samples_per_second"], 3),
                             train_seconds=round(seconds, 1), tokens_per_row=round(tokens / len(encoded["train"]), 1),
                             accuracy=round(scores["eval_accuracy"], 4), f1=round(scores["eval_f1"], 4))
        o = outcome[name]
        print(f"{name}: {o['samples_per_second']:.2f} samples/s ({seconds:.0f} s, {o['tokens_per_row']:.0f} tokens per row "
              f"before batching), accuracy {o['accuracy']:.3f}, F1 {o['f1']:.3f}", flush=True)

    fast, slow = outcome["project"], outcome["seed tutorial"]
    ratio = fast["samples_per_second"] / slow["samples_per_second"]
    print("\n" + "-" * 78)
    for name, o in outcome.items():
        print(f"{name:>26}: {o['samples_per_second']:8.2f} samples/s   accuracy {o['accuracy']:.3f}   F1 {o['f1']:.3f}")
    print(f"{'speed-up':>26}: {ratio:.1f}x (project / seed tutorial); "
          f"accuracy difference {fast['accuracy'] - slow['accuracy']:+.3f}")
    print("-" * 78)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"recipes": outcome, "speedup": round(ratio, 2),
                                               "rows": {"train": len(dd["train"]), "validation": len(dd["validation"])},
                                               "device": profile.device}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
