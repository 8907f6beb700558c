"""How fast the workshop's chat model answers: plain ``model.generate`` against the project's path, beside the
machine's memory-bandwidth bound.

    .venv/bin/python scripts/benchmark_generation.py [--json FILE] [--max-new-tokens N] [--repeats R] [--compile]

One process, the same prompts (held-out MedQuAD questions of the active profile through the chat template,
the system prompt notebook 03 trains with), the profile's model in float32 as notebook 04 loads it on a CPU,
and the profile's decoding (greedy, its repetition penalty on the answer's own tokens):

* ``plain``: ``model.generate`` as ``answers.generate_answers`` called it before fastgen;
* ``project``: the same call with ``custom_generate=fastgen.decode`` (what generate_answers now does);
* ``--compile`` adds ``generate`` with a static cache and ``torch.compile`` (one prompt; the first call's
  seconds include the compilation, reported apart).

Each is timed for one prompt and for a batch of 16, ``--repeats`` times in turn (plain, project, plain, ...),
keeping the fastest: on a shared machine the fastest run is the one least disturbed. Time to first token is
a call with ``max_new_tokens=1``; tokens/s is the decoding rate after it: (new tokens - rows) / (seconds of
the whole call - seconds to the first token), counting only tokens an answer keeps (not the padding a
batch writes after an answer stopped).

The bound: decoding one token reads every weight once (the tied embedding once, as the output layer), so
tokens/s can be at most (bytes moved per second) / (bytes of weights). Bytes moved per second is measured by
copying a 512 MiB tensor (read + write counted), fastest of many copies before and after the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def copy_rate(repeats: int) -> float:
    """Bytes read and written per second by the fastest of ``repeats`` copies of a 512 MiB float32 tensor."""
    import torch

    source = torch.ones(128 * 1024 * 1024)
    target = torch.empty_like(source)
    target.copy_(source)  # touch the pages once
    best = min(_seconds(lambda: target.copy_(source)) for _ in range(max(10, 5 * repeats)))
    return 2 * source.numel() * source.element_size() / best


def weight_bytes(model) -> int:
    """Bytes of the weights one decoding step reads (parameters() lists a tied weight once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def load(profile):
    """The profile's chat model in float32 and its tokenizer, padding on the left (notebook 04 on a CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.recipes.qlora_llama3_sft import ensure_distinct_pad

    tokenizer = AutoTokenizer.from_pretrained(profile.llm_model)
    model = AutoModelForCausalLM.from_pretrained(profile.llm_model, dtype=torch.float32).eval()
    ensure_distinct_pad(tokenizer, model)
    tokenizer.padding_side = "left"
    return model, tokenizer


def methods(model, tokenizer, penalty: float, compile_: bool) -> dict:
    """name -> call(enc, max_new_tokens) -> output ids."""
    import torch
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor
    from transformers.generation import CompileConfig

    from workshop_utils.chat import stop_token_ids
    from workshop_utils.fastgen import decode

    stops = stop_token_ids(tokenizer, model)

    def call(extra):
        def run(enc, max_new_tokens):
            length = enc["input_ids"].shape[1]
            processors = [RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=length)] if penalty != 1 else []
            with torch.no_grad():
                return model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                      pad_token_id=tokenizer.pad_token_id,
                                      logits_processor=LogitsProcessorList(processors), **extra)
        return run

    found = {"plain": call({}), "project": call({"custom_generate": decode})}
    if compile_:
        config = CompileConfig(fullgraph=True, dynamic=False)
        config._compile_all_devices = True  # generate compiles only on accelerators unless told
        found["static cache + torch.compile"] = call({"cache_implementation": "static", "compile_config": config})
    return found


def measure(run, enc, max_new_tokens: int, pad: int, repeats: int, first_token: bool = True) -> dict:
    """Fastest of ``repeats``: seconds to the first token, seconds in all, kept tokens, and the output."""
    rows, length = enc["input_ids"].shape
    out, total = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = run(enc, max_new_tokens)
        total = min(total, time.perf_counter() - start)
    ttft = min(_seconds(lambda: run(enc, 1)) for _ in range(repeats)) if first_token else None
    tokens = int((out[:, length:] != pad).sum())
    decode_s = total - (ttft or 0.0)
    return {"ttft_s": ttft, "seconds": total, "new_tokens": tokens, "output": out,
            "tokens_per_second": (tokens - rows) / decode_s if ttft is not None else tokens / total}


def compare(model, tokenizer, prompts: list[str], *, max_new_tokens: int, repeats: int, penalty: float,
            compile_: bool) -> dict:
    """{batch size: {method: measurement}}; plain and project run in turn, compile (when asked) once per size."""
    from workshop_utils.chat import render_prompts

    calls = methods(model, tokenizer, penalty, compile_)
    results: dict = {}
    for size in (1, 16):
        enc = tokenizer(render_prompts(tokenizer, prompts[:size]), return_tensors="pt", padding=True,
                        add_special_tokens=False)
        for name, run in calls.items():
            if name not in ("plain", "project"):
                if size > 1:
                    continue
                compile_s = _seconds(lambda: run(enc, max_new_tokens))  # compiles the decoding step
                results.setdefault(size, {})[name] = {**measure(run, enc, max_new_tokens, tokenizer.pad_token_id,
                                                                 repeats, first_token=False), "compile_s": compile_s}
                continue
            run(enc, 4)  # warm-up: the first call of a shape pays one-off costs
        for _ in range(repeats):  # in turn, so both meet the same load
            for name in ("plain", "project"):
                got = measure(calls[name], enc, max_new_tokens, tokenizer.pad_token_id, 1)
                best = results.setdefault(size, {}).get(name)
                if best is None or got["seconds"] < best["seconds"]:
                    results[size][name] = {**got, "ttft_s": min(got["ttft_s"], (best or got)["ttft_s"])}
        for name, got in results[size].items():
            got["same_tokens"] = got["output"].tolist() == results[size]["plain"]["output"].tolist()
            print(f"  {size} prompt(s), {name}: {got['tokens_per_second']:.1f} tokens/s", flush=True)
    return results


def table(results: dict, bound: float) -> str:
    lines = [f"{'prompts':>7}  {'method':30} {'first token s':>13} {'tokens/s':>9} {'new tokens':>10} {'same tokens':>11}"]
    for size, by_method in results.items():
        for name, got in by_method.items():
            ttft = "-" if got["ttft_s"] is None else f"{got['ttft_s']:.3f}"
            extra = f"  (compiling: {got['compile_s']:.0f} s)" if "compile_s" in got else ""
            lines.append(f"{size:>7}  {name:30} {ttft:>13} {got['tokens_per_second']:>9.1f} {got['new_tokens']:>10} "
                         f"{str(got['same_tokens']):>11}{extra}")
    lines.append(f"bandwidth bound, one prompt: {bound:.1f} tokens/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the one-prompt figures here")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time a static cache with torch.compile")
    args = parser.parse_args(argv)

    import torch

    from workshop_utils.data import load_instruction_task
    from workshop_utils.profiles import active_profile

    profile = active_profile()
    model, tokenizer = load(profile)
    prompts = list(load_instruction_task(profile)["test"]["instruction"])[:16]
    rate = copy_rate(args.repeats)
    results = compare(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, repeats=args.repeats,
                      penalty=profile.repetition_penalty, compile_=args.compile)
    rate = max(rate, copy_rate(args.repeats))  # before and after: the less disturbed of the two
    bound = rate / weight_bytes(model)
    print(f"profile {profile.name}: {Path(profile.llm_model).name}, float32, {weight_bytes(model) / 1e6:.0f} MB of weights; "
          f"{torch.get_num_threads()} threads; copy rate {rate / 1e9:.1f} GB/s (read + write); "
          f"at most {args.max_new_tokens} new tokens, repetition penalty {profile.repetition_penalty:g}; "
          f"fastest of {args.repeats}; load average {os.getloadavg()[0]:.2f}")
    print(table(results, bound))
    if args.json:
        one = results[1]
        args.json.write_text(json.dumps({
            "plain": {k: one["plain"][k] for k in ("ttft_s", "tokens_per_second")},
            "project": {k: one["project"][k] for k in ("ttft_s", "tokens_per_second", "same_tokens")},
            "bound_tokens_per_second": bound}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
