"""SFT on a CPU, measured: the project's recipe against the common one, and SFTTrainer against a bare loop.

    .venv/bin/python scripts/benchmark_sft.py                  # both parts, about 15 minutes on 2 cores
    .venv/bin/python scripts/benchmark_sft.py --part speed     # only the throughput comparison (~3 min)

Both parts train SmolLM2-135M-Instruct (the offline profile's model) with LoRA in float32 on the shipped
MedQuAD subset (``data/medquad``) and score on its held-out topics. Run it alone on an idle machine: two
heavy jobs on 2 cores slow each other 4-10x.

Part ``speed``: tokens per second of the project's ``SFTTrainer`` recipe (notebook 03, ``workshop sft``)
beside a bare PyTorch loop (forward, loss on every token, backward, AdamW) on the same model, rows, batch
and ``max_length``, with the machine's float32 matrix-multiply rate for scale. Tokens are the real
(non-padding) input tokens of each batch, counted the same way for both.

Part ``recipes``: the same rows and steps trained two ways, then scored on the held-out questions:

* ``project``: a pad token distinct from EOS, prompt/completion data with the loss on the answer only
  (``completion_only_loss``), LoRA r=16 alpha=32 dropout 0 on all seven projections;
* ``seed``: what many tutorials do, ``pad_token = eos_token``, right padding, the whole conversation as text
  with the loss on every token, transformers' ``DataCollatorForLanguageModeling`` (which masks every pad id,
  and so every EOS), LoRA r=64 alpha=16 dropout 0.1.

Printed for both: held-out NLL of the reference answers, the share of greedy answers that stop by
themselves, tokens/s and wall time. ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def offline_recipe():
    """(profile, route) of the offline profile: the recipe `workshop sft` runs on a CPU."""
    from workshop_utils.profiles import make_profile
    from workshop_utils.routes import choose_path

    profile = make_profile("offline", "the benchmark trains the offline profile's recipe", cuda=False, hub=False)
    return profile, choose_path(profile)


def project_model(max_length: int):
    """SmolLM2 with the project's LoRA, loaded as `workshop sft` loads it (notebook 03's load_model, add_lora)."""
    from workshop_utils.sft import load_for_path

    profile, route = offline_recipe()
    return load_for_path(route, profile, max_length=max_length)


def seed_model(max_length: int):
    """SmolLM2 as many tutorials set it up: pad = EOS, right padding, LoRA r=64 alpha=16 dropout 0.1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.assets import smollm2_path
    from workshop_utils.recipes.qlora_llama3_sft import LORA_TARGETS

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.eos_token_id
    tokenizer.padding_side = "right"
    config = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, config), tokenizer


def conversations(rows):
    from datasets import Dataset

    from workshop_utils.chat import SYSTEM_PROMPT, to_prompt_completion

    return to_prompt_completion(Dataset.from_list(rows), SYSTEM_PROMPT)


def project_trainer(model, tokenizer, rows, *, steps: int, batch: int, max_length: int, lr: float, out: Path):
    """The recipe of notebook 03 / `workshop sft` in the offline profile: its own ``sft_training_config``."""
    from trl import SFTTrainer

    from workshop_utils.recipes.qlora_llama3_sft import sft_training_config
    from workshop_utils.routes import use_torch_loss_on_cpu

    use_torch_loss_on_cpu()
    profile, route = offline_recipe()
    config = sft_training_config(profile, route, out, max_steps=steps, batch_size=batch, learning_rate=lr,
                                 max_length=max_length)
    return SFTTrainer(model=model, args=config, train_dataset=conversations(rows), processing_class=tokenizer)


def seed_trainer(model, tokenizer, rows, *, steps: int, batch: int, max_length: int, lr: float, out: Path):
    """The common recipe: whole conversation as text, pad = EOS, loss on every (non-pad) token."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from workshop_utils.chat import SYSTEM_PROMPT, to_messages

    texts = [tokenizer.apply_chat_template(to_messages(r["instruction"], SYSTEM_PROMPT)
                                           + [{"role": "assistant", "content": r["response"]}], tokenize=False)
             for r in rows]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length, add_special_tokens=False),
        batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), use_cpu=True, optim="adamw_torch",
        logging_steps=max(1, steps // 5), save_strategy="no", include_num_input_tokens_seen="non_padding",
        report_to="none", seed=42, data_seed=42, dataloader_num_workers=0, disable_tqdm=True,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = -100 wherever input == pad (= EOS)
    return Trainer(model=model, args=args, train_dataset=data, data_collator=collator)


def timed_train(trainer) -> dict[str, float]:
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = trainer.state.num_input_tokens_seen
    return {"train_seconds": seconds, "tokens_per_second": tokens / seconds, "train_tokens": tokens}


def bare_loop(model, tokenizer, rows, *, steps: int, batch: int, max_length: int, lr: float) -> dict[str, float]:
    """Forward, loss on every real token, backward, AdamW: the fastest honest loop PyTorch offers."""
    import torch

    from workshop_utils.chat import SYSTEM_PROMPT, to_messages

    texts = [tokenizer.apply_chat_template(to_messages(r["instruction"], SYSTEM_PROMPT)
                                           + [{"role": "assistant", "content": r["response"]}], tokenize=False)
             for r in rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    tokens, start = 0, time.perf_counter()
    for step in range(steps):
        chunk = texts[step * batch:(step + 1) * batch]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(enc["attention_mask"].sum())
    seconds = time.perf_counter() - start
    return {"train_seconds": seconds, "tokens_per_second": tokens / seconds, "train_tokens": tokens}


def held_out(model, tokenizer, test_rows, *, generate: int, max_new_tokens: int) -> dict[str, float]:
    from workshop_utils.answers import answer_nll, generate_answers, score_answers
    from workshop_utils.chat import SYSTEM_PROMPT

    questions = [r["instruction"] for r in test_rows]
    references = [r["response"] for r in test_rows]
    nll = answer_nll(model, tokenizer, questions, references, system_prompt=SYSTEM_PROMPT, desc="NLL")
    answers = generate_answers(model, tokenizer, questions[:generate], max_new_tokens=max_new_tokens,
                               system_prompt=SYSTEM_PROMPT, desc="answers")
    return score_answers(answers, references[:generate], nll=nll)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "recipes", "all"), default="all")
    parser.add_argument("--data", default=str(ROOT / "data" / "medquad"))
    parser.add_argument("--speed-steps", type=int, default=8, help="timed steps per loop in part speed (after 1 warm-up)")
    parser.add_argument("--steps", type=int, default=120, help="training steps per recipe in part recipes (default: the offline profile's)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-rows", type=int, default=100, help="held-out questions whose answers' NLL is measured")
    parser.add_argument("--generate", type=int, default=32, help="of those, how many the model answers")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--first-rows", action="store_true", help="part recipes: train on the file's first rows "
                        "instead of a seeded sample of all training rows (the figures before 2026-12-03)")
    parser.add_argument("--row-seed", type=int, default=0, help="seed of that sample (default: 0)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    from transformers import set_seed

    from workshop_utils.data import load_instruction_task

    dd = load_instruction_task(source=args.data, seed=0)
    train = [dict(r) for r in dd["train"]]
    test = [dict(r) for r in dd["test"]][: args.eval_rows]
    report: dict = {"threads": torch.get_num_threads(), "matmul_gflops": round(matmul_gflops(), 1)}
    print(f"torch threads {report['threads']}; float32 matmul 2048x2048: {report['matmul_gflops']} GFLOP/s")

    if args.part in ("speed", "all"):
        n = (args.speed_steps + 1) * args.batch
        rows = train[:n]
        set_seed(0)
        model, tok = project_model(args.max_length)
        bare_loop(model, tok, rows[: args.batch], steps=1, batch=args.batch, max_length=args.max_length, lr=args.lr)  # warm-up
        bare = bare_loop(model, tok, rows[args.batch:], steps=args.speed_steps, batch=args.batch, max_length=args.max_length, lr=args.lr)
        set_seed(0)
        model, tok = project_model(args.max_length)
        trainer = project_trainer(model, tok, rows, steps=args.speed_steps + 1, batch=args.batch,
                                  max_length=args.max_length, lr=args.lr, out=Path("/tmp/benchmark-sft-speed"))
        from transformers import TrainerCallback

        class AfterFirstStep(TrainerCallback):  # time the same steps as the bare loop: all but the warm-up
            def on_step_end(self, a, state, c, **kw):
                if state.global_step == 1:
                    self.start, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        clock = AfterFirstStep()
        trainer.add_callback(clock)
        trainer.train()
        seconds = time.perf_counter() - clock.start
        sft = {"train_seconds": seconds, "tokens_per_second": (trainer.state.num_input_tokens_seen - clock.tokens) / seconds}
        report["speed"] = {"bare_loop": bare, "sft_trainer": sft, "ratio": sft["tokens_per_second"] / bare["tokens_per_second"],
                           "steps": args.speed_steps, "batch": args.batch, "max_length": args.max_length}
        print(f"\nthroughput, {args.speed_steps} steps of batch {args.batch}, max_length {args.max_length}:")
        print(f"  bare PyTorch loop  {bare['tokens_per_second']:8.1f} tokens/s ({bare['train_seconds'] / args.speed_steps:.2f} s/step)")
        print(f"  SFTTrainer recipe  {sft['tokens_per_second']:8.1f} tokens/s ({sft['train_seconds'] / args.speed_steps:.2f} s/step)")
        print(f"  ratio {report['speed']['ratio']:.2f} (target >= 0.8)")
        del model, trainer

    if args.part in ("recipes", "all"):
        n = args.steps * args.batch
        # the rows `workshop sft` would see: a seeded sample across the whole training file (the trainer shuffles
        # all 3,000 rows), not the file's first rows, which come from a few collections and topics
        rows = train[:n] if args.first_rows else random.Random(args.row_seed).sample(train, min(n, len(train)))
        report["recipes"] = {}
        for name, (load, build) in {"project": (project_model, project_trainer), "seed": (seed_model, seed_trainer)}.items():
            set_seed(0)
            model, tok = load(args.max_length)
            trainer = build(model, tok, rows, steps=args.steps, batch=args.batch, max_length=args.max_length,
                            lr=args.lr, out=Path(f"/tmp/benchmark-sft-{name}"))
            cost = timed_train(trainer)
            scores = held_out(trainer.model, tok, test, generate=args.generate, max_new_tokens=args.max_new_tokens)
            report["recipes"][name] = {**cost, **scores}
            print(f"\n{name:>8}: NLL {scores['nll']:.3f}, stop rate {scores['eos_rate']:.0%}, ROUGE-L {scores['rougeL']:.3f}, "
                  f"looping {scores['repetition']:.0%}; {cost['tokens_per_second']:.1f} tokens/s, {cost['train_seconds']:.0f} s")
            del model, trainer
        report["recipes"]["settings"] = {"steps": args.steps, "rows": "first" if args.first_rows else f"sample, seed {args.row_seed}", "batch": args.batch, "lr": args.lr, "eval_rows": len(test),
                                         "generated": args.generate, "max_new_tokens": args.max_new_tokens}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
