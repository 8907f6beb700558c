"""How notebook 05's preference pairs were chosen: two pair constructions compared on a dev split of training topics.

    .venv/bin/python scripts/benchmark_dpo.py --json round1.json              # SFT, pairs, two arms (~45 min alone)
    .venv/bin/python scripts/benchmark_dpo.py --reuse-sft --previous round1.json --arms own:5e-5,own:1e-4 --json round2.json

The offline profile's model (SmolLM2-135M-Instruct from the packaged Q4_1 GGUF, dequantised) and recipes, on
the shipped MedQuAD subset. Nothing here reads the held-out test file: the choice is made on whole *training*
topics held out as a dev split (grouped as the test split was, ``scripts/build_medquad.py``), and only
afterwards does `workshop dpo` score the held-out topics once.

1. SFT: the project's recipe (notebook 03, `workshop sft` defaults) trains on rows outside the dev topics.
2. The SFT model answers ``--pair-questions`` training questions (outside dev) twice: plain greedy, and greedy
   with the profile's repetition penalty on the answer's own tokens (the decoding 03 scores with).
3. Each arm builds pairs from those answers, trains DPO (notebook 05's ``dpo_config``) on the SFT adapter and
   answers the dev questions with plain greedy decoding:

   * ``reference``: chosen = the MedQuAD reference answer, rejected = the model's plain greedy answer (every
     question): the construction notebook 05 used until 2026-12-05;
   * ``own``: chosen = the model's own answer decoded with the repetition penalty, rejected = its plain greedy
     answer, where the two differ: the behaviour the penalty buys at decoding time, taught to the weights.

A second round (``--reuse-sft --previous``) tries learning rates for a construction on the same SFT adapter,
dev split and pairs. The rule, fixed before the first run: among arms whose dev NLL of the reference answers is at most 5% above the
SFT model's, the lowest dev looping rate under plain greedy decoding wins (ties: the lower NLL); if no arm keeps
NLL within 5%, none is chosen and the script says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

DEFAULT_ARMS = "reference:1e-5,own:1e-5"  # construction:learning rate (1e-5 was the profile's DPO rate)


def choose_arm(sft: dict, arms: dict[str, dict], nll_margin: float = 0.05) -> str | None:
    """The rule above: lowest dev looping among arms within ``nll_margin`` of SFT's NLL; ties to the lower NLL."""
    eligible = [a for a, sc in arms.items() if sc["nll"] <= sft["nll"] * (1 + nll_margin)]
    if not eligible:
        return None
    return min(eligible, key=lambda a: (arms[a]["repetition"], arms[a]["nll"]))


def pairs_for(arm: str, rows, greedy, penalised):
    """Preference pairs of one construction, in TRL's conversational format."""
    from workshop_utils.recipes.preference_dpo import make_pair

    pairs = []
    for row, g, p in zip(rows, greedy, penalised):
        if arm == "reference" and g.text.strip() and g.text.strip() != row["response"].strip():
            pairs.append(make_pair(row["instruction"], row["response"], g.text, "train"))
        elif arm == "own" and g.text.strip() and p.text.strip() and g.text.strip() != p.text.strip():
            pairs.append(make_pair(row["instruction"], p.text, g.text, "train"))
    return pairs


def dev_scores(model, tokenizer, dev, profile, desc: str) -> dict:
    """Plain greedy answers to the dev questions, scored by the workshop's one scoring function."""
    from workshop_utils.answers import score_chat_model

    scores = score_chat_model(model, tokenizer, [r["instruction"] for r in dev], [r["response"] for r in dev],
                              max_new_tokens=profile.max_new_tokens, repetition_penalty=1.0, desc=desc)
    scores.pop("answers")
    return scores


def train_sft(rows, profile, route, out: Path) -> dict:
    from benchmark_sft import conversations, timed_train
    from transformers import set_seed
    from trl import SFTTrainer

    from workshop_utils.recipes.qlora_llama3_sft import sft_training_config
    from workshop_utils.commands.sft import load_for_route

    set_seed(0)
    model, tok = load_for_route(route, profile, max_length=profile.sft_max_length)
    config = sft_training_config(profile, route, out / "sft-checkpoints")
    trainer = SFTTrainer(model=model, args=config, train_dataset=conversations(rows), processing_class=tok)
    cost = timed_train(trainer)
    trainer.model.save_pretrained(str(out / "sft-adapter"), safe_serialization=True)
    tok.save_pretrained(str(out / "sft-adapter"))
    return cost


def run_arm(arm: str, lr: float, pairs, profile, adapter: Path, dev, out: Path) -> dict:
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOTrainer

    from workshop_utils.recipes import preference_dpo as recipe

    set_seed(42)
    model, tok = recipe.load_sft_model(profile, adapter)
    config = recipe.dpo_config(dataclasses.replace(profile, dpo_learning_rate=lr), out / f"dpo-{arm}-{lr:g}")
    train = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {**dev_scores(trainer.model, tok, dev, profile, f"dev, {arm}"), "pairs": len(pairs),
            "train_seconds": round(seconds, 1), "learning_rate": lr, "steps": trainer.state.global_step}


def pair_answers(model, tok, questions, profile, out: Path, reuse: bool):
    """The SFT model's plain greedy and penalised answers to the pair questions (kept in WORK for --reuse-sft)."""
    from workshop_utils.answers import Answer, generate_answers
    from workshop_utils.chat import SYSTEM_PROMPT

    kept = out / "pair-answers.json"
    if reuse and kept.is_file():
        saved = json.loads(kept.read_text(encoding="utf-8"))
        return [Answer(**a) for a in saved["greedy"]], [Answer(**a) for a in saved["penalised"]]
    settings = dict(max_new_tokens=profile.max_new_tokens, system_prompt=SYSTEM_PROMPT)
    greedy = generate_answers(model, tok, questions, desc="pairs: plain greedy", **settings)
    penalised = generate_answers(model, tok, questions, desc="pairs: repetition penalty",
                                 repetition_penalty=profile.repetition_penalty, **settings)
    kept.write_text(json.dumps({k: [vars(a) for a in v] for k, v in (("greedy", greedy), ("penalised", penalised))}),
                    encoding="utf-8")
    return greedy, penalised


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "medquad"))
    parser.add_argument("--dev-rows", type=int, default=64, help="rows of whole training topics held out as dev")
    parser.add_argument("--pair-questions", type=int, default=128, help="training questions the pairs are built from")
    parser.add_argument("--work", default="/tmp/benchmark-dpo", help="scratch folder (adapters, checkpoints)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--arms", default=DEFAULT_ARMS, help="construction:learning-rate pairs, comma-separated")
    parser.add_argument("--reuse-sft", action="store_true", help="keep WORK/sft-adapter and the pairs' answers of an earlier run")
    parser.add_argument("--previous", help="JSON of an earlier run on the same SFT adapter: its arms join the choice")
    parser.add_argument("--profile", default="offline", choices=("offline", "smoke"), help="smoke: a quick check of the script")
    args = parser.parse_args(argv)

    from benchmark_sft import dev_split

    from workshop_utils.profiles import make_profile
    from workshop_utils.routes import choose_route

    from workshop_utils.data import load_instruction_task
    from workshop_utils.recipes import preference_dpo as recipe
    from workshop_utils.routes import use_torch_loss_on_cpu

    use_torch_loss_on_cpu()
    profile = make_profile(args.profile, "the DPO benchmark runs the offline profile's recipes", cuda=False, hub=False)
    route = choose_route(profile)
    out = Path(args.work)
    train = [dict(r) for r in load_instruction_task(source=args.data, seed=0)["train"]]
    dev, rest = dev_split(train, Path(args.data), rows=args.dev_rows, seed=1)
    sft_rows = random.Random(0).sample(rest, min(profile.sft_max_steps * profile.sft_batch_size, len(rest)))
    pair_rows = random.Random(42).sample(rest, args.pair_questions)
    print(f"dev: {len(dev)} rows of training topics; SFT on {len(sft_rows)} rows and pairs from {len(pair_rows)} "
          "questions of the other topics")
    report: dict = {"dev_rows": len(dev), "sft_rows": len(sft_rows), "pair_questions": len(pair_rows)}
    if not (args.reuse_sft and (out / "sft-adapter" / "adapter_config.json").is_file()):
        report["sft_cost"] = train_sft(sft_rows, profile, route, out)
    model, tok = recipe.load_sft_model(profile, out / "sft-adapter")
    report["sft"] = dev_scores(model, tok, dev, profile, "dev, SFT")
    greedy, penalised = pair_answers(model, tok, [r["instruction"] for r in pair_rows], profile, out, args.reuse_sft)
    del model
    report["arms"] = {}
    for spec in args.arms.split(","):
        arm, lr = spec.split(":")
        report["arms"][spec] = run_arm(arm, float(lr), pairs_for(arm, pair_rows, greedy, penalised), profile,
                                       out / "sft-adapter", dev, out)
    if args.previous:
        earlier = json.loads(Path(args.previous).read_text(encoding="utf-8"))
        report["arms"] = {**{(k if ":" in k else f"{k}:{v['learning_rate']:g}"): v for k, v in earlier["arms"].items()},
                          **report["arms"]}
    report["chosen"] = choose_arm(report["sft"], report["arms"])
    print("\ndev, plain greedy decoding: NLL of the references / looping / stop rate / ROUGE-L")
    for name, sc in [("SFT", report["sft"]), *report["arms"].items()]:
        print(f"  {name:>9}: {sc['nll']:.3f} / {sc['repetition']:.0%} / {sc['eos_rate']:.0%} / {sc['rougeL']:.3f}"
              f"{'  (' + str(sc['pairs']) + ' pairs)' if 'pairs' in sc else ''}{'  <- chosen' if name == report['chosen'] else ''}")
    if report["chosen"] is None:
        print("no arm kept the dev NLL within 5% of the SFT model's")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
