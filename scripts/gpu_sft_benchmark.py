"""Peak GPU memory and training throughput of one QLoRA SFT recipe on two implementations.

    .venv/bin/python scripts/gpu_sft_benchmark.py                 # Llama 3 8B shapes
    .venv/bin/python scripts/gpu_sft_benchmark.py --models 8b,1b  # and Llama 3.2 1B shapes

What it does, on a machine with a CUDA GPU and no network:

1. builds a randomly initialised Llama with the *shapes* of Llama 3 8B (hidden 4096, 32 layers, 32 heads,
   8 key/value heads, MLP 14336, vocabulary 128256) and, optionally, Llama 3.2 1B, plus a tokenizer with
   Llama 3's special tokens, and saves them (bf16 safetensors) under ``--cache``. Random weights cost
   nothing to download and have the same memory and compute profile as the real ones;
2. runs the same SFT step (LoRA r=16 on every linear layer of a 4-bit NF4 model, sequence length 2048,
   batch 2, TRL ``SFTTrainer``) on the **Unsloth** route and on the **transformers + bitsandbytes + peft**
   route, each in a fresh Python process (importing unsloth patches transformers for the whole process);
3. prints peak GPU memory and tokens/s of both as a markdown table (and writes it to ``--output``).

Timing excludes the first ``--warmup`` steps (kernel compilation, allocator warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHAPES = {
    # https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
    # https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
}
NAMES = {"8b": "Llama 3 8B shapes", "1b": "Llama 3.2 1B shapes"}
ROUTES = ("unsloth", "bnb")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="8b", help="comma-separated: 8b, 1b (default: 8b)")
    p.add_argument("--routes", default=",".join(ROUTES), help="comma-separated: unsloth, bnb")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--cache", default=str(ROOT / ".cache" / "bench-models"), help="where the random models are saved")
    p.add_argument("--output", default=str(ROOT / "outputs" / "gpu_sft_benchmark.md"))
    p.add_argument("--child", choices=ROUTES, help=argparse.SUPPRESS)  # internal: run one route, print JSON
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- building the models
def build_model(kind: str, cache: Path) -> Path:
    """A random-weight Llama with the shapes of ``kind`` and a tokenizer that fits its vocabulary."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from workshop_utils.assets import EOT, EOT_TEXT, build_tokenizer

    folder = cache / f"random-llama-{kind}"
    if (folder / "config.json").is_file():
        return folder
    tokenizer = build_tokenizer()  # Llama 3 special tokens and chat template, ~3k entries
    shape = SHAPES[kind]
    if len(tokenizer) > shape["vocab_size"]:
        raise SystemExit(f"error: tokenizer has {len(tokenizer)} entries, more than the model's vocabulary")
    config = LlamaConfig(
        **shape, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.convert_tokens_to_ids(EOT),
        pad_token_id=tokenizer.pad_token_id, dtype="bfloat16",
    )
    # The embedding matrix keeps the full 128,256 rows (as in Llama 3); the tokenizer uses the first few
    # thousand ids, so every id it produces is valid and the memory/compute of the output layer is real.
    print(f"building {NAMES[kind]} with random weights on the GPU ...", flush=True)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids(EOT_TEXT)], pad_token_id=tokenizer.pad_token_id
    )
    tmp = folder.with_name(folder.name + ".building")
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="4GB")
    tokenizer.save_pretrained(tmp)
    del model
    torch.cuda.empty_cache()
    tmp.rename(folder)
    print(f"saved to {folder}", flush=True)
    return folder


def long_conversations(tokenizer, seq_len: int, n: int):
    """``n`` prompt/completion rows whose rendered length reaches ``seq_len`` (cut there by max_length)."""
    from datasets import Dataset

    from workshop_utils.data import load_instruction_task
    from workshop_utils.paths import data_dir
    from workshop_utils.chat import SYSTEM_PROMPT, to_messages

    rows = load_instruction_task(source=str(data_dir() / "medquad"))["train"]
    pool = [r["response"] for r in rows]
    out = []
    for i in range(n):
        answer, j = [], i
        while len(tokenizer(" ".join(answer), add_special_tokens=False)["input_ids"]) < seq_len:
            answer.extend(pool[(j + k) % len(pool)] for k in range(20))
            j += 20
        out.append({"prompt": to_messages(rows[i % len(rows)]["instruction"], SYSTEM_PROMPT),
                    "completion": [{"role": "assistant", "content": " ".join(answer)}]})
    return Dataset.from_list(out)


# --------------------------------------------------------------------------- one route, in its own process
def run_child(args) -> dict:
    import torch
    from transformers import TrainerCallback
    from workshop_utils.profiles import make_profile
    from workshop_utils.answers import parameter_counts
    from workshop_utils.routes import SFTRoute
    from workshop_utils.sft import load_for_route

    profile = make_profile("gpu", "benchmark", cuda=True, hub=False)
    route = SFTRoute(args.child, args.model_dir, "benchmark")
    start = time.perf_counter()
    model, tokenizer = load_for_route(route, profile, max_length=args.seq_len, lora_r=args.lora_r, seed=0)
    load_seconds = time.perf_counter() - start
    if args.child == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_training(model)
    from trl import SFTConfig, SFTTrainer

    total_steps = args.warmup + args.steps
    data = long_conversations(tokenizer, args.seq_len, total_steps * args.batch_size)
    config = SFTConfig(
        output_dir=str(Path(args.cache) / f"run-{args.child}"), max_steps=total_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, learning_rate=2e-4,
        max_length=args.seq_len, completion_only_loss=True, bf16=profile.bf16, fp16=profile.fp16,
        gradient_checkpointing=args.child == "bnb",
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.child == "bnb" else None,
        optim="adamw_8bit" if args.child == "unsloth" else "paged_adamw_8bit",
        logging_steps=1, save_strategy="no", report_to="none", include_num_input_tokens_seen="non_padding",
        disable_tqdm=True, seed=0,
    )
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                torch.cuda.synchronize()
                marks["t0"], marks["tok0"] = time.perf_counter(), state.num_input_tokens_seen

    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()])
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - marks["t0"]
    tokens = trainer.state.num_input_tokens_seen - marks["tok0"]
    trainable, total = parameter_counts(trainer.model)
    return {"route": args.child, "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
            "tokens_per_second": tokens / seconds, "seconds_per_step": seconds / args.steps,
            "trainable_params": trainable, "total_params": total, "load_seconds": load_seconds,
            "gpu": torch.cuda.get_device_name(0)}


# --------------------------------------------------------------------------- driver
def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: gpu_sft_benchmark needs a CUDA GPU and none was found; run it on a GPU machine", file=sys.stderr)
        return 2
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return 0
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    routes = [p.strip() for p in args.routes.split(",") if p.strip()]
    bad = [k for k in kinds if k not in SHAPES] + [p for p in routes if p not in ROUTES]
    if bad:
        print(f"error: unknown model/route {bad[0]!r}; models: {', '.join(SHAPES)}; routes: {', '.join(ROUTES)}", file=sys.stderr)
        return 2
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "UNSLOTH_DISABLE_STATISTICS": "1", "PYTHONPATH": str(ROOT / "src")}
    rows = []
    for kind in kinds:
        folder = build_model(kind, cache)
        for route in routes:
            print(f"\n=== {NAMES[kind]}, route {route} ===", flush=True)
            cmd = [sys.executable, __file__, "--child", route, "--model-dir", str(folder), "--seq-len", str(args.seq_len),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--lora-r", str(args.lora_r), "--cache", str(cache)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            result = next((json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
            if done.returncode != 0 or result is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"{route} failed (exit {done.returncode}): {tail[0][:300]}", flush=True)
                rows.append((NAMES[kind], route, "failed", "-", "-", "-"))
                continue
            print(json.dumps(result), flush=True)
            rows.append((NAMES[kind], route, f"{result['peak_memory_bytes'] / 2**30:.2f} GiB", f"{result['tokens_per_second']:,.0f}",
                         f"{result['seconds_per_step']:.2f}", f"{result['trainable_params']:,}"))
    gpu = torch.cuda.get_device_name(0)
    table = [f"QLoRA SFT step, LoRA r={args.lora_r} on all linear layers, sequence length {args.seq_len}, "
             f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up; {gpu}", "",
             "| model | route | peak GPU memory | tokens/s | s/step | trainable params |",
             "|---|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(table)
    print("\n" + text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0 if all(r[2] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
