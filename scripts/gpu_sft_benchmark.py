"""Peak GPU memory and training throughput of one QLoRA SFT recipe on two implementations.

    .venv/bin/python scripts/gpu_sft_benchmark.py                 # Llama 3 8B shapes
    .venv/bin/python scripts/gpu_sft_benchmark.py --models 8b,1b  # and Llama 3.2 1B shapes

What it does, on a machine with a CUDA GPU and no network:

1. builds a randomly initialised Llama with the *shapes* of Llama 3 8B (hidden 4096, 32 layers, 32 heads,
   8 key/value heads, MLP 14336, vocabulary 128256) and, optionally, Llama 3.2 1B, plus a tokenizer of the
   same 128,256 entries with Llama 3's special-token ids (:func:`build_llama3_tokenizer`), and saves them
   (bf16 safetensors) under ``--cache``. Random weights cost nothing to download and have the same memory
   and compute profile as the real ones. scripts/gpu_rehearsal.py builds its model with the same functions;
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
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json
LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
BOS_ID, END_OF_TEXT_ID, EOT_ID = 128000, 128001, 128009  # Llama 3's ids


# --------------------------------------------------------------------------- the random model (gpu_rehearsal too)
def llama3_special_tokens() -> list[str]:
    """Llama 3's 256 special tokens in id order (128000-128255)."""
    named = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
             128007: "<|end_header_id|>", 128009: "<|eot_id|>"}
    reserved = iter(range(256))
    return [named.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(128000, 128256)]


def build_llama3_tokenizer(vocab_size: int = LLAMA3_8B["vocab_size"]):
    """The workshop's small byte-level BPE, padded to Llama 3's vocabulary with Llama 3's special-token ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from workshop_utils.assets import BOS, EOT, LLAMA3_CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

    small = json.loads(build_tokenizer().backend_tokenizer.to_str())["model"]
    learned = [t for t, _ in sorted(small["vocab"].items(), key=lambda kv: kv[1]) if t not in SPECIAL_TOKENS]
    specials = llama3_special_tokens()
    vocab = {t: i for i, t in enumerate(learned)}
    for i in range(len(learned), vocab_size - len(specials)):
        vocab[f"[w{i}]"] = i  # never made by a merge; byte-level characters, so it decodes to "[w12345]"
    if len(vocab) != vocab_size - len(specials):
        raise RuntimeError("filler tokens collided with learned ones")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in small["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, padding_side="right",
                                   model_max_length=LLAMA3_8B["max_position_embeddings"])
    fast.chat_template = LLAMA3_CHAT_TEMPLATE  # no pad token, as Meta ships it: notebook 03's fix picks one
    return fast


def llama3_shape(layers: int | None = None, hidden: int | None = None) -> dict:
    """Llama 3 8B's shapes, with ``layers`` and ``hidden`` (heads, MLP scaled along) when given."""
    shape = dict(LLAMA3_8B)
    if layers:
        shape["num_hidden_layers"] = layers
    if hidden:
        heads = max(2, hidden // 128)
        shape.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                     intermediate_size=-(-hidden * 7 // 128) * 64)  # 3.5x, a multiple of 4-bit blocks (64)
    return shape


def build_random_llama(folder: Path, *, shape: dict, device: str = "cuda", seed: int = 0) -> dict:
    """A random-weight Llama (bf16 safetensors) and the Llama 3-like tokenizer in ``folder``; reused if built."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    info_file = folder / "random-model.json"
    if info_file.is_file() and json.loads(info_file.read_text())["shape"] == shape:
        return {**json.loads(info_file.read_text()), "reused": True}
    start = time.perf_counter()
    tokenizer = build_llama3_tokenizer(shape["vocab_size"])
    config = LlamaConfig(**shape, bos_token_id=BOS_ID, eos_token_id=EOT_ID, dtype="bfloat16")
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=[END_OF_TEXT_ID, EOT_ID], do_sample=False)
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="5GB")
    tokenizer.save_pretrained(tmp)
    info = {"shape": shape, "parameters": model.num_parameters(), "tokenizer_entries": len(tokenizer),
            "bytes_on_disk": sum(f.stat().st_size for f in tmp.glob("*.safetensors")),
            "build_seconds": round(time.perf_counter() - start, 1)}
    (tmp / "random-model.json").write_text(json.dumps(info, indent=1))
    del model
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {**info, "reused": False}


SHAPES = {
    "8b": LLAMA3_8B,
    # https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json (without its long-context rope scaling)
    "1b": {**LLAMA3_8B, **dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, tie_word_embeddings=True)},
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
    """A random-weight Llama with the shapes of ``kind`` and a Llama 3-like tokenizer of its full vocabulary."""
    folder = cache / f"random-llama-{kind}"
    print(f"{NAMES[kind]}, random weights: {folder}", flush=True)
    info = build_random_llama(folder, shape=SHAPES[kind], device="cuda")
    print(("reused" if info["reused"] else f"built in {info['build_seconds']} s") + f": {info['parameters']:,} parameters",
          flush=True)
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
    from workshop_utils.commands.sft import load_for_route

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

    from workshop_utils.tables import markdown_table

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
             markdown_table(("model", "route", "peak GPU memory", "tokens/s", "s/step", "trainable params"), rows)]
    text = "\n".join(table)
    print("\n" + text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0 if all(r[2] != "failed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
