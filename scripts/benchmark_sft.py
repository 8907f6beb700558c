"""SFT on a CPU, measured: the project's recipe against the common one, and SFTTrainer against a bare loop.

    .venv/bin/python scripts/benchmark_sft.py                  # both parts, about 28 minutes on 2 cores
    .venv/bin/python scripts/benchmark_sft.py --part speed     # only the throughput comparison (~3 min)
    .venv/bin/python scripts/benchmark_sft.py --part decoding  # how the repetition penalty was chosen (~20 min)

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

Printed for both: held-out NLL of the reference answers, the share of answers that stop by themselves
(scored as the workshop scores, greedy with the profile's repetition penalty, and with plain greedy
decoding), tokens/s and wall time. ``--json FILE`` also writes the figures.

Part ``decoding`` (only when named): how the repetition penalty was chosen. Whole topics of the *training*
file are held out as a dev split; the project's recipe trains on the other topics; each penalty in
``--penalties`` answers the dev questions; a rule fixed before the first run picks one (highest dev stop
rate at no more than 0.02 ROUGE-L cost); only then are plain greedy and the chosen penalty scored once on
the held-out test.
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
    from workshop_utils.routes import choose_route

    profile = make_profile("offline", "the benchmark trains the offline profile's recipe", cuda=False, hub=False)
    return profile, choose_route(profile)


def project_model(max_length: int):
    """SmolLM2 with the project's LoRA, loaded as `workshop sft` loads it (notebook 03's load_model, add_lora)."""
    from workshop_utils.commands.sft import load_for_route

    profile, route = offline_recipe()
    return load_for_route(route, profile, max_length=max_length)


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
    import dataclasses

    profile, route = offline_recipe()
    profile = dataclasses.replace(profile, sft_max_steps=steps, sft_batch_size=batch, sft_learning_rate=lr,
                                  sft_max_length=max_length)
    config = sft_training_config(profile, route, out)
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


def held_out(model, tokenizer, test_rows, *, generate: int, max_new_tokens: int, repetition_penalty: float = 1.0,
             nll: bool = True) -> dict[str, float]:
    from workshop_utils.answers import score_chat_model

    questions = [r["instruction"] for r in test_rows]
    references = [r["response"] for r in test_rows]
    scores = score_chat_model(model, tokenizer, questions, references, max_new_tokens=max_new_tokens, answered=generate,
                              repetition_penalty=repetition_penalty, nll=nll, desc="held-out")
    answers = scores.pop("answers")
    # what an answer that did not stop looks like (a loop, a list, a long answer): kept for reading, not scored
    scores["not_stopped"] = [{"question": q, "answer": a.text[:400]} for q, a in zip(questions, answers) if not a.stopped]
    return scores


def dev_split(train: list[dict], data: Path, *, rows: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(dev, rest) of the training rows, split by topic as the held-out test was (scripts/build_medquad.py):
    whole topics go to dev until it holds ``rows`` rows, so a choice made on dev never sees the test and the
    rows trained on never share a disease or a source page with dev."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_medquad import topic_keys

    raw = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    topic_of = dict(zip(((r["instruction"], r["response"]) for r in raw), topic_keys(raw)))
    keys = [topic_of[(r["instruction"], r["response"])] for r in train]
    topics = sorted(set(keys))
    random.Random(seed).shuffle(topics)
    chosen: set[str] = set()
    for topic in topics:
        if sum(k in chosen for k in keys) >= rows:
            break
        chosen.add(topic)
    return [r for r, k in zip(train, keys) if k in chosen], [r for r, k in zip(train, keys) if k not in chosen]


def choose_penalty(dev_scores: dict[float, dict]) -> float:
    """The rule, fixed before any run: the highest dev stop rate among penalties that cost at most 0.02 of
    dev ROUGE-L against greedy decoding (1.0); ties go to the smaller penalty."""
    greedy = dev_scores[1.0]["rougeL"]
    eligible = [p for p, sc in dev_scores.items() if sc["rougeL"] >= greedy - 0.02]
    return max(sorted(eligible), key=lambda p: dev_scores[p]["eos_rate"])


def decoding_part(args, train: list[dict], test: list[dict]) -> dict:
    """Train the project's recipe on rows outside the dev topics, pick the repetition penalty on dev by
    :func:`choose_penalty`, then score greedy decoding and the chosen penalty once on the held-out test."""
    from transformers import set_seed

    dev, rest = dev_split(train, Path(args.data), rows=args.dev_rows, seed=args.row_seed + 1)
    rows = random.Random(args.row_seed).sample(rest, min(args.steps * args.batch, len(rest)))
    print(f"dev: {len(dev)} rows of training topics; training on {len(rows)} rows of the other topics")
    set_seed(0)
    model, tok = project_model(args.max_length)
    trainer = project_trainer(model, tok, rows, steps=args.steps, batch=args.batch, max_length=args.max_length,
                              lr=args.lr, out=Path("/tmp/benchmark-sft-decoding"))
    cost = timed_train(trainer)
    penalties = sorted({1.0, *(float(p) for p in args.penalties.split(","))})
    dev_scores = {p: held_out(trainer.model, tok, dev, generate=len(dev), max_new_tokens=args.max_new_tokens,
                              repetition_penalty=p, nll=False) for p in penalties}
    chosen = choose_penalty(dev_scores)
    print("\nrepetition penalty on dev (generated tokens only): stop rate / ROUGE-L / looping")
    for p, sc in dev_scores.items():
        print(f"  {p:.2f}: {sc['eos_rate']:.0%} / {sc['rougeL']:.3f} / {sc['repetition']:.0%}{'  <- chosen' if p == chosen else ''}")
    test_scores = {p: held_out(trainer.model, tok, test, generate=args.generate, max_new_tokens=args.max_new_tokens,
                               repetition_penalty=p) for p in sorted({1.0, chosen})}
    print(f"\nheld-out test ({args.generate} answers):")
    for p, sc in test_scores.items():
        print(f"  {p:.2f}: stop rate {sc['eos_rate']:.0%}, ROUGE-L {sc['rougeL']:.3f}, looping {sc['repetition']:.0%}")
    return {"dev_rows": len(dev), "train_rows": len(rows), **cost, "chosen": chosen,
            "dev": {str(p): sc for p, sc in dev_scores.items()}, "test": {str(p): sc for p, sc in test_scores.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "recipes", "decoding", "all"), default="all",
                        help="all = speed and recipes; decoding (repetition penalty chosen on a dev split) runs only when named")
    parser.add_argument("--data", default=str(ROOT / "data" / "medquad"))
    parser.add_argument("--speed-steps", type=int, default=8, help="timed steps per loop in part speed (after 1 warm-up)")
    parser.add_argument("--steps", type=int, default=120, help="training steps per recipe in part recipes (default: the offline profile's)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-rows", type=int, default=100, help="held-out questions whose answers' NLL is measured")
    parser.add_argument("--generate", type=int, default=100, help="of those, how many the model answers")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--first-rows", action="store_true", help="part recipes: train on the file's first rows "
                        "instead of a seeded sample of all training rows (the figures before 2026-12-03)")
    parser.add_argument("--row-seed", type=int, default=0, help="seed of that sample (default: 0)")
    parser.add_argument("--recipes", default="project,seed", help="part recipes: which to train, comma-separated (default: both)")
    parser.add_argument("--dev-rows", type=int, default=100, help="part decoding: rows of training topics held out as dev")
    parser.add_argument("--penalties", default="1.0,1.1,1.2,1.3", help="part decoding: repetition penalties tried on dev")
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
        recipes = {"project": (project_model, project_trainer), "seed": (seed_model, seed_trainer)}
        unknown = set(args.recipes.split(",")) - set(recipes)
        if unknown:
            parser.error(f"--recipes: unknown {sorted(unknown)}; choose from {sorted(recipes)}")
        penalty = offline_recipe()[0].repetition_penalty  # the workshop's scoring (01, 03, `workshop sft`)
        for name in args.recipes.split(","):
            load, build = recipes[name]
            set_seed(0)
            model, tok = load(args.max_length)
            trainer = build(model, tok, rows, steps=args.steps, batch=args.batch, max_length=args.max_length,
                            lr=args.lr, out=Path(f"/tmp/benchmark-sft-{name}"))
            cost = timed_train(trainer)
            scores = held_out(trainer.model, tok, test, generate=args.generate, max_new_tokens=args.max_new_tokens,
                              repetition_penalty=penalty)
            greedy = held_out(trainer.model, tok, test, generate=args.generate, max_new_tokens=args.max_new_tokens, nll=False)
            report["recipes"][name] = {**cost, **scores, "repetition_penalty": penalty, "plain_greedy": greedy}
            print(f"\n{name:>8}: NLL {scores['nll']:.3f}, stop rate {scores['eos_rate']:.0%}, ROUGE-L {scores['rougeL']:.3f}, "
                  f"looping {scores['repetition']:.0%} (repetition penalty {penalty:g}; plain greedy: stop rate "
                  f"{greedy['eos_rate']:.0%}, ROUGE-L {greedy['rougeL']:.3f}, looping {greedy['repetition']:.0%}); "
                  f"{cost['tokens_per_second']:.1f} tokens/s, {cost['train_seconds']:.0f} s")
            del model, trainer
        report["recipes"]["settings"] = {"steps": args.steps, "rows": "first" if args.first_rows else f"sample, seed {args.row_seed}", "batch": args.batch, "lr": args.lr, "eval_rows": len(test),
                                         "generated": args.generate, "max_new_tokens": args.max_new_tokens}
    if args.part == "decoding":
        report["decoding"] = decoding_part(args, train, test)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
